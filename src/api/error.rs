//! The HTTP error type: one table from error to status, one JSON body shape.
//!
//! Bodies follow the seed's origin, Django REST framework: `{"detail": "..."}` for
//! request-level errors and `{"<field>": ["message", ...]}` for validation errors.
//! Internal failures answer with a generic message and a correlation id; the cause
//! is logged under that id and never sent to the client.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::vault::{FieldErrors, StorageFailure, VaultError};

pub const ENTERPRISE_DOMAIN_NOT_FOUND: &str = "Enterprise domain not found";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("authentication credentials were not provided")]
    NoCredentials,
    #[error("invalid token")]
    InvalidToken,
    #[error("permission denied")]
    Forbidden,
    #[error("not found: {0}")]
    NotFound(&'static str),
    #[error("method {method} not allowed")]
    MethodNotAllowed { method: String, allow: &'static str },
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("unsupported media type")]
    UnsupportedMediaType(String),
    #[error("malformed request: {0}")]
    BadRequest(String),
    #[error("validation failed")]
    Validation(FieldErrors),
    #[error("too many failed authentications; retry after {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    /// 429: the same work is already running (one at a time per domain).
    #[error("busy: {0}")]
    Busy(&'static str),
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    #[error("request head larger than {0} bytes")]
    HeadersTooLarge(usize),
    #[error("the data directory's disk is (nearly) full")]
    DiskFull,
    #[error("the store stopped after a failed write ({correlation_id})")]
    StoreFailed { correlation_id: String },
    /// Every outbound slot is in use (`outbound.max_concurrent_fetches`): 503
    /// with `Retry-After`, not 429, since no client is over a limit of its own.
    #[error("outbound capacity in use: {0}")]
    OutboundBusy(String),
    #[error("service unavailable ({correlation_id})")]
    Unavailable { correlation_id: String },
    #[error("internal error ({correlation_id})")]
    Internal { correlation_id: String },
}

use crate::logging::correlation_id;

impl ApiError {
    /// Log `cause` under a new correlation id and return the generic error.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        let correlation_id = correlation_id();
        tracing::error!(%correlation_id, error = %cause, "internal error");
        ApiError::Internal { correlation_id }
    }

    /// A discovery document that cannot be used: 400 on `discovery_url` with the
    /// reason, or 503 ([`ApiError::OutboundBusy`]) when the server's outbound
    /// capacity is all in use (nothing was fetched: trying again may work).
    pub fn discovery(e: &crate::oidc::discovery::DiscoveryError) -> Self {
        match e {
            crate::oidc::discovery::DiscoveryError::Fetch(
                f @ crate::outbound::FetchError::Busy { .. },
            ) => ApiError::OutboundBusy(f.to_string()),
            other => ApiError::Validation(crate::vault::field_error(
                "discovery_url",
                other.to_string(),
            )),
        }
    }

    fn unavailable(cause: &dyn std::fmt::Display) -> Self {
        let correlation_id = correlation_id();
        tracing::error!(%correlation_id, error = %cause, "storage unavailable");
        ApiError::Unavailable { correlation_id }
    }
}

impl From<VaultError> for ApiError {
    fn from(e: VaultError) -> Self {
        match e {
            VaultError::Invalid(fields) => ApiError::Validation(fields),
            VaultError::NotFound => ApiError::NotFound("Not found."),
            ref e => match e.storage_failure() {
                Some(StorageFailure::DomainNotFound) => {
                    ApiError::NotFound(ENTERPRISE_DOMAIN_NOT_FOUND)
                }
                Some(StorageFailure::DiskFull) => ApiError::DiskFull,
                // A failed group commit stops the store for good (fail-stop): the
                // write that met it and every request after it get the same answer.
                Some(StorageFailure::Failed) => {
                    let correlation_id = correlation_id();
                    tracing::error!(%correlation_id, error = %e, "storage unavailable");
                    ApiError::StoreFailed { correlation_id }
                }
                Some(StorageFailure::Unavailable) => ApiError::unavailable(e),
                None => ApiError::internal(e),
            },
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::NoCredentials | ApiError::InvalidToken => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::BadRequest(_) | ApiError::Validation(_) => StatusCode::BAD_REQUEST,
            ApiError::TooManyRequests { .. } | ApiError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::Unavailable { .. } | ApiError::DiskFull | ApiError::StoreFailed { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::OutboundBusy(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let body = match self {
            ApiError::NoCredentials => {
                json!({"detail": "Authentication credentials were not provided."})
            }
            ApiError::InvalidToken => json!({"detail": "Invalid token."}),
            ApiError::Forbidden => {
                json!({"detail": "You do not have permission to perform this action."})
            }
            ApiError::NotFound(detail) => json!({ "detail": detail }),
            ApiError::MethodNotAllowed { method, .. } => {
                json!({"detail": format!("Method \"{method}\" not allowed.")})
            }
            ApiError::PayloadTooLarge => json!({"detail": format!(
                "Request body is larger than {} bytes.",
                super::MAX_BODY_BYTES
            )}),
            ApiError::UnsupportedMediaType(got) => json!({"detail": format!(
                "Unsupported media type \"{got}\" in request. Send application/json."
            )}),
            ApiError::BadRequest(detail) => json!({ "detail": detail }),
            ApiError::Validation(fields) => json!(fields),
            ApiError::TooManyRequests { retry_after_secs } => json!({"detail": format!(
                "Too many failed authentication attempts from this address. \
                 Expected available in {retry_after_secs} seconds."
            )}),
            ApiError::Busy(detail) => json!({ "detail": detail }),
            ApiError::RequestTimeout => {
                json!({"detail": "The request body did not arrive in time."})
            }
            ApiError::HeadersTooLarge(max) => json!({"detail": format!(
                "Request headers are larger than {max} bytes."
            )}),
            ApiError::DiskFull => json!({
                "detail": "The disk holding the data directory is full: the change was not made. \
                           Free some space on it, then try again.",
            }),
            ApiError::StoreFailed { correlation_id } => json!({
                "detail": "A write to disk failed (disk full or I/O error): the change may not be \
                           durable, and the server stopped serving from memory what may not be on \
                           disk. Free space on the data directory's disk, then restart the server: \
                           it recovers exactly what is on disk.",
                "correlation_id": correlation_id,
            }),
            ApiError::OutboundBusy(detail) => json!({ "detail": detail }),
            ApiError::Unavailable { correlation_id } => json!({
                "detail": "The store is unavailable (closed, or its storage cluster unreachable or \
                           without quorum): the change may not have been made. Try again later; \
                           a retry is safe.",
                "correlation_id": correlation_id,
            }),
            ApiError::Internal { correlation_id } => json!({
                "detail": "Internal server error.",
                "correlation_id": correlation_id,
            }),
        };
        let mut res = HttpResponse::build(self.status_code()).json(body);
        let headers = res.headers_mut();
        match self {
            ApiError::NoCredentials => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"oidcvault\""),
                );
            }
            ApiError::InvalidToken => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"oidcvault\", error=\"invalid_token\""),
                );
            }
            ApiError::MethodNotAllowed { allow, .. } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::Unavailable { .. } | ApiError::Busy(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::DiskFull => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
            }
            ApiError::TooManyRequests { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            ApiError::OutboundBusy(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        res
    }
}
