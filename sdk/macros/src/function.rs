//! The function form: `#[transform] fn name(record: &Record<'_>, out: &mut
//! Emitter<'_>) -> Result<(), E>`, a transform without configuration or state.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, GenericParam, ItemFn, ReturnType, Type};

const SIGNATURE: &str =
    "expected `fn(record: &Record<'_>, out: &mut Emitter<'_>) -> Result<(), E>`";

/// Checks the signature; every problem found becomes one spanned error.
pub(crate) fn validate(f: &ItemFn) -> syn::Result<()> {
    let sig = &f.sig;
    let mut errors = Vec::new();
    let mut fail = |span: &dyn quote::ToTokens, message: &str| {
        errors.push(syn::Error::new_spanned(span, message))
    };
    if let Some(token) = &sig.asyncness {
        fail(
            token,
            "a transform cannot be `async`: it runs synchronously, once per record",
        );
    }
    if let Some(token) = &sig.unsafety {
        fail(token, "a transform cannot be `unsafe`");
    }
    if let Some(abi) = &sig.abi {
        fail(
            abi,
            "a transform cannot have an ABI: the macro generates the export",
        );
    }
    if let Some(token) = &sig.constness {
        fail(token, "a transform cannot be `const`");
    }
    if let Some(param) = sig
        .generics
        .params
        .iter()
        .find(|p| !matches!(p, GenericParam::Lifetime(_)))
    {
        fail(
            param,
            "a transform cannot be generic: the macro must export one concrete function",
        );
    }
    if let Some(clause) = &sig.generics.where_clause {
        fail(clause, "a transform cannot have a `where` clause");
    }
    if let Some(variadic) = &sig.variadic {
        fail(variadic, "a transform cannot be variadic");
    }
    let args: Vec<&FnArg> = sig.inputs.iter().collect();
    match args[..] {
        [record, out] => {
            check_arg(record, "Record", false).unwrap_or_else(|e| errors.push(e));
            check_arg(out, "Emitter", true).unwrap_or_else(|e| errors.push(e));
        }
        _ => {
            let message = format!("{SIGNATURE}: found {} parameter(s)", args.len());
            let span = if args.is_empty() {
                sig.paren_token.span.join()
            } else {
                sig.inputs.span()
            };
            errors.push(syn::Error::new(span, message));
        }
    }
    check_return(&sig.output).unwrap_or_else(|e| errors.push(e));
    combine(errors)
}

/// The argument must be `&Name<..>` (or `&mut Name<..>` if `mutable`).
fn check_arg(arg: &FnArg, name: &str, mutable: bool) -> syn::Result<()> {
    let (ty, wanted) = match arg {
        FnArg::Receiver(receiver) => {
            return Err(syn::Error::new_spanned(
                receiver,
                "a transform function is a free function, not a method",
            ));
        }
        FnArg::Typed(typed) => (
            &*typed.ty,
            if mutable {
                format!("&mut {name}<'_>")
            } else {
                format!("&{name}<'_>")
            },
        ),
    };
    let ok = match ty {
        Type::Reference(r) => r.mutability.is_some() == mutable && last_segment_is(&r.elem, name),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(syn::Error::new_spanned(
            ty,
            format!("{SIGNATURE}: this parameter must be `{wanted}`"),
        ))
    }
}

fn check_return(output: &ReturnType) -> syn::Result<()> {
    let message = "a transform must return `Result<(), E>` where `E: Into<sluice_sdk::Error>`";
    let ty = match output {
        ReturnType::Default => return Err(syn::Error::new(output.span(), message)),
        ReturnType::Type(_, ty) => ty,
    };
    let Type::Path(path) = &**ty else {
        return Err(syn::Error::new_spanned(ty, message));
    };
    let Some(last) = path.path.segments.last().filter(|s| s.ident == "Result") else {
        return Err(syn::Error::new_spanned(ty, message));
    };
    // `Result<(), E>`, or an alias such as `anyhow::Result<()>`: the first
    // argument, if spelled out, must be `()`.
    if let syn::PathArguments::AngleBracketed(args) = &last.arguments
        && let Some(syn::GenericArgument::Type(ok)) = args.args.first()
        && !matches!(ok, Type::Tuple(t) if t.elems.is_empty())
    {
        let message = "a transform returns `Result<(), E>`: emit outputs through the `Emitter`";
        return Err(syn::Error::new_spanned(ok, message));
    }
    Ok(())
}

/// Whether `ty` is a path whose last segment is `name`.
pub(crate) fn last_segment_is(ty: &Type, name: &str) -> bool {
    matches!(ty, Type::Path(p) if p.qself.is_none() && p.path.segments.last().is_some_and(|s| s.ident == name))
}

pub(crate) fn combine(errors: Vec<syn::Error>) -> syn::Result<()> {
    let mut errors = errors.into_iter();
    let Some(mut first) = errors.next() else {
        return Ok(());
    };
    errors.for_each(|e| first.combine(e));
    Err(first)
}

/// An adapter type implementing `Transform` by calling the function, and its
/// export. The adapter is type-checked natively too.
pub(crate) fn expand(f: &ItemFn) -> TokenStream {
    let name = &f.sig.ident;
    let adapter: Type = syn::parse_quote!(SluiceFnTransform);
    // Spanned at the return type, so a bad error type is reported there.
    let error_span = match &f.sig.output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => f.sig.output.span(),
    };
    // Mixed-site hygiene: the user's function may itself be called `record`.
    let record = Ident::new("record", Span::mixed_site());
    let out = Ident::new("out", Span::mixed_site());
    let call = quote_spanned! {error_span=>
        ::core::result::Result::map_err(#name(#record, #out), ::core::convert::Into::<::sluice_sdk::Error>::into)
    };
    let export = crate::export(crate::Kind::Transform, &adapter, &f.sig.ident);
    quote! {
        #[doc(hidden)]
        #[allow(dead_code)]
        const _: () = {
            struct SluiceFnTransform;

            impl ::sluice_sdk::Transform for SluiceFnTransform {
                fn init(config: &::sluice_sdk::Config) -> ::core::result::Result<Self, ::sluice_sdk::Error> {
                    ::sluice_sdk::__private::expect_no_config(config)?;
                    ::core::result::Result::Ok(SluiceFnTransform)
                }

                fn process(
                    &mut self,
                    #record: &::sluice_sdk::Record<'_>,
                    #out: &mut ::sluice_sdk::Emitter<'_>,
                ) -> ::core::result::Result<(), ::sluice_sdk::Error> {
                    #call
                }
            }

            #export
        };
    }
}

#[cfg(test)]
mod tests {
    use syn::parse_quote;

    use super::*;
    use crate::message;

    #[test]
    fn accepts_the_documented_signature_and_variants() {
        let forms: [ItemFn; 5] = [
            parse_quote!(
                fn f(record: &Record<'_>, out: &mut Emitter<'_>) -> Result<(), Error> {
                    Ok(())
                }
            ),
            parse_quote!(
                pub fn f(
                    r: &sluice_sdk::Record,
                    o: &mut sluice_sdk::Emitter,
                ) -> Result<(), String> {
                    Ok(())
                }
            ),
            parse_quote!(
                fn f<'a>(_: &Record<'a>, _: &mut Emitter<'a>) -> anyhow::Result<()> {
                    Ok(())
                }
            ),
            parse_quote!(
                fn f(
                    _: &Record<'_>,
                    _: &mut Emitter<'_>,
                ) -> std::result::Result<(), Box<dyn Error>> {
                    Ok(())
                }
            ),
            parse_quote!(
                fn f(_: &Record<'_>, _: &mut Emitter<'_>) -> Result<()> {
                    Ok(())
                }
            ),
        ];
        for form in &forms {
            validate(form).unwrap();
        }
    }

    #[test]
    fn rejects_wrong_arity() {
        let f: ItemFn = parse_quote!(
            fn f(record: &Record<'_>) -> Result<(), Error> {
                Ok(())
            }
        );
        assert_eq!(
            message(validate(&f)),
            format!("{SIGNATURE}: found 1 parameter(s)")
        );
        let f: ItemFn = parse_quote!(
            fn f() -> Result<(), Error> {
                Ok(())
            }
        );
        assert_eq!(
            message(validate(&f)),
            format!("{SIGNATURE}: found 0 parameter(s)")
        );
    }

    #[test]
    fn rejects_wrong_argument_types() {
        let f: ItemFn = parse_quote!(
            fn f(r: Record<'_>, o: &mut Emitter<'_>) -> Result<(), Error> {
                Ok(())
            }
        );
        assert_eq!(
            message(validate(&f)),
            format!("{SIGNATURE}: this parameter must be `&Record<'_>`")
        );
        let f: ItemFn = parse_quote!(
            fn f(r: &mut Record<'_>, o: &mut Emitter<'_>) -> Result<(), Error> {
                Ok(())
            }
        );
        assert_eq!(
            message(validate(&f)),
            format!("{SIGNATURE}: this parameter must be `&Record<'_>`")
        );
        let f: ItemFn = parse_quote!(
            fn f(r: &Record<'_>, o: &Emitter<'_>) -> Result<(), Error> {
                Ok(())
            }
        );
        assert_eq!(
            message(validate(&f)),
            format!("{SIGNATURE}: this parameter must be `&mut Emitter<'_>`")
        );
        let f: ItemFn = parse_quote!(
            fn f(o: &mut Emitter<'_>, r: &Record<'_>) -> Result<(), Error> {
                Ok(())
            }
        );
        assert_eq!(
            message(validate(&f)),
            format!("{SIGNATURE}: this parameter must be `&Record<'_>`")
        );
        let f: ItemFn = parse_quote!(
            fn f(&self, o: &mut Emitter<'_>) -> Result<(), Error> {
                Ok(())
            }
        );
        assert_eq!(
            message(validate(&f)),
            "a transform function is a free function, not a method"
        );
    }

    #[test]
    fn rejects_non_result_returns() {
        let f: ItemFn = parse_quote!(
            fn f(r: &Record<'_>, o: &mut Emitter<'_>) {}
        );
        assert!(message(validate(&f)).starts_with("a transform must return `Result<(), E>`"));
        let f: ItemFn = parse_quote!(
            fn f(r: &Record<'_>, o: &mut Emitter<'_>) -> Option<()> {
                None
            }
        );
        assert!(message(validate(&f)).starts_with("a transform must return `Result<(), E>`"));
        let f: ItemFn = parse_quote!(
            fn f(r: &Record<'_>, o: &mut Emitter<'_>) -> Result<Vec<u8>, Error> {
                todo!()
            }
        );
        assert!(message(validate(&f)).starts_with("a transform returns `Result<(), E>`"));
    }

    #[test]
    fn rejects_async_generic_unsafe_and_friends() {
        let f: ItemFn = parse_quote!(
            async fn f(r: &Record<'_>, o: &mut Emitter<'_>) -> Result<(), Error> {
                Ok(())
            }
        );
        assert!(message(validate(&f)).starts_with("a transform cannot be `async`"));
        let f: ItemFn = parse_quote!(
            fn f<E>(r: &Record<'_>, o: &mut Emitter<'_>) -> Result<(), E> {
                Ok(())
            }
        );
        assert!(message(validate(&f)).starts_with("a transform cannot be generic"));
        let f: ItemFn = parse_quote!(
            fn f<const N: usize>(r: &Record<'_>, o: &mut Emitter<'_>) -> Result<(), E> {
                Ok(())
            }
        );
        assert!(message(validate(&f)).starts_with("a transform cannot be generic"));
        let f: ItemFn = parse_quote!(
            unsafe fn f(r: &Record<'_>, o: &mut Emitter<'_>) -> Result<(), E> {
                Ok(())
            }
        );
        assert_eq!(message(validate(&f)), "a transform cannot be `unsafe`");
        let f: ItemFn = parse_quote!(
            extern "C" fn f(r: &Record<'_>, o: &mut Emitter<'_>) -> Result<(), E> {
                Ok(())
            }
        );
        assert!(message(validate(&f)).starts_with("a transform cannot have an ABI"));
    }

    #[test]
    fn reports_every_problem_at_once() {
        let f: ItemFn = parse_quote!(
            async fn f<T>(r: T) {}
        );
        let errors: Vec<String> = validate(&f)
            .unwrap_err()
            .into_iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(errors.len(), 4, "{errors:?}");
    }
}
