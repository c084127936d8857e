//! Procedural macros of the Sluice guest SDK. Use them through `sluice-sdk`
//! (`#[sluice_sdk::transform]`, `#[sluice_sdk::aggregate]`,
//! `#[sluice_sdk::join]`), which documents them; the expansion names only
//! `::sluice_sdk` paths.

use proc_macro::TokenStream;
use proc_macro2::{Ident, Span, TokenStream as TokenStream2};
use quote::{ToTokens, quote, quote_spanned};
use syn::Item;
use syn::spanned::Spanned;

mod aggregate_impl;
mod function;
mod trait_impl;

/// Exports a transform: see `sluice_sdk::transform` for the documentation.
#[proc_macro_attribute]
pub fn transform(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(args.into(), item.into()).into()
}

/// Exports an aggregate: see `sluice_sdk::aggregate` for the documentation.
#[proc_macro_attribute]
pub fn aggregate(args: TokenStream, item: TokenStream) -> TokenStream {
    aggregate_impl::expand(args.into(), item.into()).into()
}

/// Exports a join: see `sluice_sdk::join` for the documentation.
#[proc_macro_attribute]
pub fn join(args: TokenStream, item: TokenStream) -> TokenStream {
    let (args, item): (TokenStream2, TokenStream2) = (args.into(), item.into());
    if let Err(error) = no_args(args, Kind::Join) {
        return with_error(item, error).into();
    }
    let parsed = match syn::parse2::<Item>(item.clone()) {
        Ok(parsed) => parsed,
        Err(error) => return with_error(item, error).into(),
    };
    let result = match &parsed {
        Item::Impl(i) => {
            trait_impl::validate(i, Kind::Join).map(|()| trait_impl::expand(i, Kind::Join))
        }
        other => Err(syn::Error::new_spanned(
            item_name(other),
            "`#[sluice_sdk::join]` goes on an `impl Join for YourType` block",
        )),
    };
    match result {
        Ok(glue) => quote!(#parsed #glue).into(),
        Err(error) => with_error(parsed.into_token_stream(), error).into(),
    }
}

/// What a guest exports; a component exports exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Transform,
    Aggregate,
    Join,
}

impl Kind {
    /// The trait to implement.
    pub(crate) fn trait_name(self) -> &'static str {
        match self {
            Kind::Transform => "Transform",
            Kind::Aggregate => "Aggregate",
            Kind::Join => "Join",
        }
    }

    /// The attribute and the word in messages.
    pub(crate) fn noun(self) -> &'static str {
        match self {
            Kind::Transform => "transform",
            Kind::Aggregate => "aggregate",
            Kind::Join => "join",
        }
    }

    /// The SDK's export macro.
    fn export_macro(self) -> Ident {
        let name = format!("__export_{}", self.noun());
        Ident::new(&name, Span::call_site())
    }
}

/// Checks the attribute takes no arguments.
pub(crate) fn no_args(args: TokenStream2, kind: Kind) -> syn::Result<()> {
    if args.is_empty() {
        return Ok(());
    }
    let message = format!("`#[sluice_sdk::{}]` takes no arguments", kind.noun());
    Err(syn::Error::new_spanned(args, message))
}

fn expand(args: TokenStream2, item: TokenStream2) -> TokenStream2 {
    if let Err(error) = no_args(args, Kind::Transform) {
        return with_error(item, error);
    }
    let item = match syn::parse2::<Item>(item.clone()) {
        Ok(item) => item,
        Err(error) => return with_error(item, error),
    };
    let result = match &item {
        Item::Fn(f) => function::validate(f).map(|()| function::expand(f)),
        Item::Impl(i) => trait_impl::validate(i, Kind::Transform)
            .map(|()| trait_impl::expand(i, Kind::Transform)),
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
    syn::Error::new_spanned(
        item_name(item),
        "`#[sluice_sdk::transform]` goes on a function `fn(&Record<'_>, &mut Emitter<'_>) -> Result<(), E>` \
         or on an `impl Transform for YourType` block",
    )
}

/// What to point at when an attribute is on the wrong kind of item.
pub(crate) fn item_name(item: &Item) -> TokenStream2 {
    match item {
        Item::Struct(s) => s.ident.to_token_stream(),
        Item::Enum(e) => e.ident.to_token_stream(),
        Item::Trait(t) => t.ident.to_token_stream(),
        Item::Mod(m) => m.ident.to_token_stream(),
        Item::Fn(f) => f.sig.ident.to_token_stream(),
        other => quote_spanned!(other.span() => item),
    }
}

/// Shared by every form: the wasm export of `ty`, and a crate-level marker
/// so that a second export in the same crate (transform or aggregate) is a
/// compile error: a component exports exactly one world. The marker is a
/// `#[macro_export]` macro, whose name lives at the crate root whatever
/// module the export is in; it is spanned at `span_of` so the duplicate
/// error points at the second export.
fn export(kind: Kind, ty: &syn::Type, span_of: &dyn ToTokens) -> TokenStream2 {
    let marker = quote_spanned! {span_of.span()=>
        #[doc(hidden)]
        #[macro_export]
        macro_rules! only_one_sluice_export_per_crate {
            () => {};
        }
    };
    let export_macro = kind.export_macro();
    quote! {
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        const _: () = {
            ::sluice_sdk::#export_macro!(#ty);
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
            out.contains("macro_rules ! only_one_sluice_export_per_crate"),
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
