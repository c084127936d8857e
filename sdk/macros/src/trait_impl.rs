//! The trait form: `#[transform] impl Transform for MyType { .. }` for a
//! configurable or stateful transform, and `#[aggregate] impl Aggregate for
//! MyType { .. }`.

use proc_macro2::TokenStream;
use syn::{ItemImpl, PathArguments, Type};

use crate::Kind;
use crate::function::combine;

/// Checks that this is `impl Transform for ConcreteType` (or `Aggregate`,
/// per `kind`).
pub(crate) fn validate(i: &ItemImpl, kind: Kind) -> syn::Result<()> {
    let (trait_name, noun) = (kind.trait_name(), kind.noun());
    let expected = format!("expected `impl {trait_name} for YourType`");
    let Some((negative, path, _)) = &i.trait_ else {
        return Err(syn::Error::new_spanned(
            &i.self_ty,
            format!("{expected}: this is an inherent impl"),
        ));
    };
    let mut errors = Vec::new();
    if negative.is_some() || path.segments.last().is_none_or(|s| s.ident != trait_name) {
        errors.push(syn::Error::new_spanned(
            path,
            format!("{expected}: this implements another trait"),
        ));
    }
    if let Some(token) = &i.unsafety {
        errors.push(syn::Error::new_spanned(
            token,
            format!("`{trait_name}` is not an unsafe trait"),
        ));
    }
    if let Some(token) = &i.defaultness {
        errors.push(syn::Error::new_spanned(
            token,
            format!("{noun} impl cannot be `default`", noun = with_article(noun)),
        ));
    }
    if !i.generics.params.is_empty() || i.generics.where_clause.is_some() {
        let message = format!(
            "{noun} cannot be generic: the macro must export one concrete type",
            noun = with_article(noun)
        );
        errors.push(syn::Error::new_spanned(&i.generics, message));
    }
    let concrete = match &*i.self_ty {
        Type::Path(p) => {
            p.qself.is_none()
                && p.path
                    .segments
                    .iter()
                    .all(|s| matches!(s.arguments, PathArguments::None))
        }
        _ => false,
    };
    if !concrete {
        let message = format!(
            "the {noun} type must be a plain named type (a struct or enum without generic arguments)"
        );
        errors.push(syn::Error::new_spanned(&i.self_ty, message));
    }
    combine(errors)
}

/// The export of the impl's type; the impl itself is kept as written.
pub(crate) fn expand(i: &ItemImpl, kind: Kind) -> TokenStream {
    crate::export(kind, &i.self_ty, &i.self_ty)
}

/// "a transform", "an aggregate".
fn with_article(noun: &str) -> String {
    let article = if noun.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {noun}")
}

#[cfg(test)]
mod tests {
    use syn::parse_quote;

    use super::*;
    use crate::Kind;
    use crate::message;

    #[test]
    fn accepts_transform_impls() {
        let impls: [ItemImpl; 2] = [
            parse_quote!(impl Transform for Router { fn init(c: &Config) -> Result<Self, Error> { todo!() } }),
            parse_quote!(impl sluice_sdk::Transform for crate::routing::Router {}),
        ];
        for i in &impls {
            validate(i, Kind::Transform).unwrap();
        }
    }

    #[test]
    fn rejects_other_impls() {
        let i: ItemImpl = parse_quote!(impl Router {});
        assert_eq!(
            message(validate(&i, Kind::Transform)),
            "expected `impl Transform for YourType`: this is an inherent impl"
        );
        let i: ItemImpl = parse_quote!(impl Default for Router {});
        assert_eq!(
            message(validate(&i, Kind::Transform)),
            "expected `impl Transform for YourType`: this implements another trait"
        );
        let i: ItemImpl = parse_quote!(
            unsafe impl Transform for Router {}
        );
        assert_eq!(
            message(validate(&i, Kind::Transform)),
            "`Transform` is not an unsafe trait"
        );
    }

    #[test]
    fn rejects_generic_transforms() {
        let i: ItemImpl = parse_quote!(
            impl<T: Send> Transform for Router<T> {}
        );
        let errors: Vec<String> = validate(&i, Kind::Transform)
            .unwrap_err()
            .into_iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("a transform cannot be generic"));
        let i: ItemImpl = parse_quote!(impl Transform for Router<'static> {});
        assert!(
            message(validate(&i, Kind::Transform))
                .starts_with("the transform type must be a plain named type")
        );
        let i: ItemImpl = parse_quote!(impl Transform for &'static Router {});
        assert!(
            message(validate(&i, Kind::Transform))
                .starts_with("the transform type must be a plain named type")
        );
    }
}
