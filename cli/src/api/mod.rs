//! The OpenAI request shapes of `zoo serve`, apart from the server itself: a body's
//! bytes parsed and validated into a [`request::Generation`] or refused with an
//! [`error::ApiError`] (a 400 naming the field). Nothing here touches a model or the
//! network, so the fuzz target `server_request` calls it directly.
//!
//! - [`request`]: the bodies of `/v1/completions` and `/v1/chat/completions`;
//! - [`params`]: the fields both share and their validation;
//! - [`unsupported`]: OpenAI's fields zoo refuses when they ask for something;
//! - [`error`]: OpenAI error responses.

pub mod error;
pub mod params;
pub mod request;
pub mod unsupported;
