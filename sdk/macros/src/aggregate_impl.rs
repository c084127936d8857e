//! `#[aggregate] impl Aggregate for MyType { .. }`: exports a windowed
//! aggregate. Only the trait form exists: an aggregate has an accumulator
//! type and several methods, so there is no function form.
//!
//! The impl is kept as written, plus `type Parsed = ();` where it does not
//! declare one (stable Rust has no defaults for associated types, and most
//! aggregates keep nothing per record). An impl with neither `fold` nor
//! `fold_parsed` is refused: the trait's default `fold` would dead-letter
//! every record.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote};
use syn::{ImplItem, Item, ItemImpl, parse_quote};

use crate::{Kind, item_name, no_args, trait_impl, with_error};

/// The attribute's expansion: the impl (with `type Parsed = ();` if it
/// declares none) plus its export, or the item plus a spanned error.
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    if let Err(error) = no_args(args, Kind::Aggregate) {
        return with_error(item, error);
    }
    let item = match syn::parse2::<Item>(item.clone()) {
        Ok(item) => item,
        Err(error) => return with_error(item, error),
    };
    let Item::Impl(i) = &item else {
        let error = misplaced(&item);
        return with_error(item.into_token_stream(), error);
    };
    // Declared on the error paths too, so that a refused impl gets only the
    // error that says why, not a missing `Parsed` besides.
    let kept = with_parsed(i);
    match trait_impl::validate(i, Kind::Aggregate).and_then(|()| has_fold(i)) {
        Ok(()) => {
            let glue = trait_impl::expand(i, Kind::Aggregate);
            quote!(#kept #glue)
        }
        Err(error) => with_error(kept.into_token_stream(), error),
    }
}

/// The impl, with `type Parsed = ();` added if it declares no `Parsed`.
fn with_parsed(i: &ItemImpl) -> ItemImpl {
    let declared = i
        .items
        .iter()
        .any(|item| matches!(item, ImplItem::Type(t) if t.ident == "Parsed"));
    let mut i = i.clone();
    if !declared {
        i.items.push(parse_quote!(
            type Parsed = ();
        ));
    }
    i
}

/// Refuses an impl that defines neither `fold` nor `fold_parsed`.
fn has_fold(i: &ItemImpl) -> syn::Result<()> {
    let folds = i.items.iter().any(
        |item| matches!(item, ImplItem::Fn(f) if f.sig.ident == "fold" || f.sig.ident == "fold_parsed"),
    );
    if folds {
        return Ok(());
    }
    Err(syn::Error::new_spanned(
        &i.self_ty,
        "an aggregate must define `fold` (or `fold_parsed`, to fold with what `extract` parsed)",
    ))
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
        let out = expanded(
            quote!(),
            quote!(impl Aggregate for Sessions { fn fold() {} }),
        );
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
    fn declares_parsed_only_where_the_impl_does_not() {
        let out = expanded(
            quote!(),
            quote!(impl Aggregate for Sessions { fn fold() {} }),
        );
        assert!(out.contains("type Parsed = () ;"), "{out}");
        let out = expanded(
            quote!(),
            quote!(impl Aggregate for Sessions { type Parsed = f64; fn fold_parsed() {} }),
        );
        assert!(out.contains("type Parsed = f64 ;"), "{out}");
        assert!(!out.contains("type Parsed = () ;"), "{out}");
        assert!(!out.contains("compile_error"), "{out}");
    }

    #[test]
    fn refuses_an_impl_without_a_fold_but_keeps_it() {
        let out = expanded(
            quote!(),
            quote!(impl Aggregate for Sessions { type Acc = u64; fn merge() {} }),
        );
        assert!(
            out.contains(
                "an aggregate must define `fold` (or `fold_parsed`, to fold with what `extract` parsed)"
            ),
            "{out}"
        );
        assert!(out.contains("fn merge"), "{out}");
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
