//! The `#[eddy_sdk::handler]` attribute. Use it through `eddy-sdk`.

use proc_macro::TokenStream;
use quote::quote;
use syn::{ItemFn, parse_macro_input};

/// Marks `fn NAME(event: Event) -> Result<(), HandlerError>` (or
/// `fn NAME(event: Event, delivery: Delivery) -> …`) as the plugin's handler.
///
/// The function stays an ordinary function, so native tests call it
/// directly. On wasm32 the attribute also exports it as the component's
/// `handle`.
#[proc_macro_attribute]
pub fn handler(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(
            proc_macro2::Span::call_site(),
            "#[eddy_sdk::handler] takes no arguments",
        )
        .to_compile_error()
        .into();
    }
    let function = parse_macro_input!(item as ItemFn);
    let name = &function.sig.ident;
    let syn::ReturnType::Type(_, output) = &function.sig.output else {
        return syn::Error::new_spanned(
            &function.sig,
            "a handler returns `Result<(), eddy_sdk::HandlerError>`",
        )
        .to_compile_error()
        .into();
    };
    let call = match function.sig.inputs.len() {
        1 => quote! { #name(event) },
        2 => quote! { #name(event, delivery) },
        _ => {
            return syn::Error::new_spanned(
                &function.sig,
                "a handler takes `event: eddy_sdk::Event` and optionally \
                 `delivery: eddy_sdk::Delivery`",
            )
            .to_compile_error()
            .into();
        }
    };
    // Natively, the body runs between two marks, so the test recorder drops
    // what a failed event published, as the host does.
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = &function;
    let wrapped = quote! {
        #(#attrs)*
        #vis #sig {
            #[cfg(not(target_arch = "wasm32"))]
            ::eddy_sdk::testing::__begin_event();
            #[allow(clippy::redundant_closure_call)]
            let result: #output = (move || -> #output #block)();
            #[cfg(not(target_arch = "wasm32"))]
            ::eddy_sdk::testing::__end_event(result.is_err());
            result
        }
    };
    quote! {
        #wrapped

        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct EddyHandler;

            impl ::eddy_sdk::__private::Guest for EddyHandler {
                #[allow(unused_variables)]
                fn handle(
                    event: ::eddy_sdk::Event,
                    delivery: ::eddy_sdk::Delivery,
                ) -> ::core::result::Result<(), ::eddy_sdk::HandlerError> {
                    #call
                }
            }

            ::eddy_sdk::bindings::__export_handler!(EddyHandler);
        };
    }
    .into()
}
