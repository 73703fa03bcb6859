//! The JSON request body extractor of the API: like `axum::Json`, but a body
//! that does not fit its type (a field unknown, missing or of the wrong type,
//! or not JSON) is a 400 whose error names the field, in the API's error
//! shape. Request types refuse unknown fields (`deny_unknown_fields`), so a
//! misspelt option is an error instead of being silently ignored.
//! [`QueryParams`] does the same for query strings.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::Error;

pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(JsonBody(v)),
            Err(JsonRejection::JsonDataError(e)) => Err(invalid(&e)),
            Err(JsonRejection::JsonSyntaxError(e)) => Err(invalid(&e)),
            Err(other) => Err(other.into_response()),
        }
    }
}

/// Query parameters, like `axum::extract::Query`, with a bad or missing
/// parameter a 400 in the API's error shape.
pub struct QueryParams<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for QueryParams<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(QueryParams(v)),
            Err(e) => {
                let mut cause: &(dyn std::error::Error + 'static) = &e;
                while let Some(next) = cause.source() {
                    cause = next;
                }
                Err(Error::InvalidArgument(format!("query: {cause}")).into_response())
            }
        }
    }
}

/// The innermost cause (serde's "unknown field `x`, expected one of …").
fn invalid(e: &(dyn std::error::Error + 'static)) -> Response {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    Error::InvalidArgument(format!("request body: {cause}")).into_response()
}
