//! `#[aggregate] impl Aggregate for MyType { .. }`: exports a windowed
//! aggregate. Only the trait form exists: an aggregate has an accumulator
//! type and several methods, so there is no function form.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote};
use syn::Item;

use crate::{Kind, item_name, no_args, trait_impl, with_error};

/// The attribute's expansion: the impl unchanged plus its export, or the
/// item unchanged plus a spanned error.
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    if let Err(error) = no_args(args, Kind::Aggregate) {
        return with_error(item, error);
    }
    let item = match syn::parse2::<Item>(item.clone()) {
        Ok(item) => item,
        Err(error) => return with_error(item, error),
    };
    let result = match &item {
        Item::Impl(i) => trait_impl::validate(i, Kind::Aggregate)
            .map(|()| trait_impl::expand(i, Kind::Aggregate)),
        other => Err(misplaced(other)),
    };
    match result {
        Ok(glue) => quote!(#item #glue),
        Err(error) => with_error(item.into_token_stream(), error),
    }
}

fn misplaced(item: &Item) -> syn::Error {
    let message = match item {
        Item::Fn(_) => {
            "`#[sluice_sdk::aggregate]` goes on an `impl Aggregate for YourType` block, not on a \
             function: an aggregate has an accumulator type and several methods"
        }
        _ => "`#[sluice_sdk::aggregate]` goes on an `impl Aggregate for YourType` block",
    };
    syn::Error::new_spanned(item_name(item), message)
}

#[cfg(test)]
mod tests {
    use quote::quote;
    use syn::{ItemImpl, parse_quote};

    use super::*;
    use crate::message;

    fn expanded(args: TokenStream, item: TokenStream) -> String {
        expand(args, item).to_string()
    }

    #[test]
    fn exports_aggregate_impls_only_on_wasm() {
        let out = expanded(quote!(), quote!(impl Aggregate for Sessions {}));
        assert!(!out.contains("compile_error"), "{out}");
        assert!(out.contains("impl Aggregate for Sessions"), "{out}");
        assert!(out.contains("cfg (target_arch = \"wasm32\")"), "{out}");
        assert!(
            out.contains(":: sluice_sdk :: __export_aggregate ! (Sessions)"),
            "{out}"
        );
        assert!(
            out.contains("macro_rules ! only_one_sluice_export_per_crate"),
            "{out}"
        );
        let i: ItemImpl = parse_quote!(impl sluice_sdk::Aggregate for crate::s::Sessions {});
        trait_impl::validate(&i, Kind::Aggregate).unwrap();
    }

    #[test]
    fn rejects_functions_structs_and_arguments_but_keeps_the_item() {
        let out = expanded(
            quote!(),
            quote!(
                fn sessions() {}
            ),
        );
        assert!(out.contains("compile_error"), "{out}");
        assert!(out.contains("not on a function"), "{out}");
        assert!(out.contains("fn sessions"), "{out}");
        let out = expanded(
            quote!(),
            quote!(
                struct Sessions;
            ),
        );
        assert!(
            out.contains("goes on an `impl Aggregate for YourType` block"),
            "{out}"
        );
        assert!(out.contains("struct Sessions"), "{out}");
        let out = expanded(quote!(gap = 5), quote!(impl Aggregate for Sessions {}));
        assert!(
            out.contains("`#[sluice_sdk::aggregate]` takes no arguments"),
            "{out}"
        );
        assert!(!out.contains("__export_aggregate"), "{out}");
    }

    #[test]
    fn rejects_other_impls_with_aggregate_wording() {
        let i: ItemImpl = parse_quote!(impl Transform for Sessions {});
        assert_eq!(
            message(trait_impl::validate(&i, Kind::Aggregate)),
            "expected `impl Aggregate for YourType`: this implements another trait"
        );
        let i: ItemImpl = parse_quote!(
            unsafe impl Aggregate for Sessions {}
        );
        assert_eq!(
            message(trait_impl::validate(&i, Kind::Aggregate)),
            "`Aggregate` is not an unsafe trait"
        );
        let i: ItemImpl = parse_quote!(
            impl<T> Aggregate for Sessions<T> {}
        );
        let errors: Vec<String> = trait_impl::validate(&i, Kind::Aggregate)
            .unwrap_err()
            .into_iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(
            errors,
            [
                "an aggregate cannot be generic: the macro must export one concrete type",
                "the aggregate type must be a plain named type (a struct or enum without generic arguments)",
            ]
        );
    }
}
