//! Procedural macros of the Sluice guest SDK. Use them through `sluice-sdk`
//! (`#[sluice_sdk::transform]`), which documents them; the expansion names
//! only `::sluice_sdk` paths.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::{ToTokens, quote, quote_spanned};
use syn::Item;
use syn::spanned::Spanned;

mod function;
mod trait_impl;

/// Exports a transform: see `sluice_sdk::transform` for the documentation.
#[proc_macro_attribute]
pub fn transform(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(args.into(), item.into()).into()
}

fn expand(args: TokenStream2, item: TokenStream2) -> TokenStream2 {
    if !args.is_empty() {
        let error = syn::Error::new_spanned(args, "`#[sluice_sdk::transform]` takes no arguments");
        return with_error(item, error);
    }
    let item = match syn::parse2::<Item>(item.clone()) {
        Ok(item) => item,
        Err(error) => return with_error(item, error),
    };
    let result = match &item {
        Item::Fn(f) => function::validate(f).map(|()| function::expand(f)),
        Item::Impl(i) => trait_impl::validate(i).map(|()| trait_impl::expand(i)),
        other => Err(misplaced(other)),
    };
    match result {
        Ok(glue) => quote!(#item #glue),
        Err(error) => with_error(item.into_token_stream(), error),
    }
}

/// The item unchanged plus the error, so that one mistake does not cascade
/// into "cannot find function" errors wherever the item is used.
fn with_error(item: TokenStream2, error: syn::Error) -> TokenStream2 {
    let error = error.to_compile_error();
    quote!(#error #item)
}

fn misplaced(item: &Item) -> syn::Error {
    let what = match item {
        Item::Struct(s) => s.ident.to_token_stream(),
        Item::Enum(e) => e.ident.to_token_stream(),
        Item::Trait(t) => t.ident.to_token_stream(),
        Item::Mod(m) => m.ident.to_token_stream(),
        other => quote_spanned!(other.span() => item),
    };
    syn::Error::new_spanned(
        what,
        "`#[sluice_sdk::transform]` goes on a function `fn(&Record<'_>, &mut Emitter<'_>) -> Result<(), E>` \
         or on an `impl Transform for YourType` block",
    )
}

/// Shared by both forms: the wasm export of `ty`, and a crate-level marker so
/// that a second transform in the same crate is a compile error (a component
/// exports exactly one `transform` interface). The marker is a
/// `#[macro_export]` macro, whose name lives at the crate root whatever module
/// the transform is in; it is spanned at `span_of` so the duplicate error
/// points at the second transform.
fn export(ty: &syn::Type, span_of: &dyn ToTokens) -> TokenStream2 {
    let marker = quote_spanned! {span_of.span()=>
        #[doc(hidden)]
        #[macro_export]
        macro_rules! only_one_sluice_transform_per_crate {
            () => {};
        }
    };
    quote! {
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        const _: () = {
            ::sluice_sdk::__export_transform!(#ty);
        };

        #marker
    }
}

/// The message of the first error, for the unit tests.
#[cfg(test)]
fn message(result: syn::Result<()>) -> String {
    result.expect_err("should be rejected").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expanded(args: TokenStream2, item: TokenStream2) -> String {
        expand(args, item).to_string()
    }

    #[test]
    fn rejects_structs_and_arguments_but_keeps_the_item() {
        let out = expanded(
            quote!(),
            quote!(
                struct Router;
            ),
        );
        assert!(out.contains("compile_error"), "{out}");
        assert!(out.contains("goes on a function"), "{out}");
        assert!(out.contains("struct Router"), "{out}");
        let out = expanded(
            quote!(fast),
            quote!(
                fn f(r: &Record<'_>, o: &mut Emitter<'_>) -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        assert!(out.contains("takes no arguments"), "{out}");
        assert!(out.contains("fn f"), "{out}");
    }

    #[test]
    fn exports_only_on_wasm() {
        let out = expanded(quote!(), quote!(impl Transform for Router {}));
        assert!(!out.contains("compile_error"), "{out}");
        assert!(out.contains("cfg (target_arch = \"wasm32\")"), "{out}");
        assert!(
            out.contains(":: sluice_sdk :: __export_transform ! (Router)"),
            "{out}"
        );
        assert!(
            out.contains("macro_rules ! only_one_sluice_transform_per_crate"),
            "{out}"
        );
    }

    #[test]
    fn wraps_functions_in_an_adapter() {
        let out = expanded(
            quote!(),
            quote!(
                fn f(r: &Record<'_>, o: &mut Emitter<'_>) -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        assert!(
            out.contains("impl :: sluice_sdk :: Transform for SluiceFnTransform"),
            "{out}"
        );
        assert!(out.contains("expect_no_config"), "{out}");
        assert!(out.contains("f (record , out)"), "{out}");
    }
}
