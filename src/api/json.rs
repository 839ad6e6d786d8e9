//! Reading request bodies field by field, DRF-style.
//!
//! The body is split into a map of *raw* JSON values borrowed from the request
//! buffer, so each field is decoded once, into the type it belongs in: the client
//! secret goes straight into a zeroizing [`SecretString`] without passing through a
//! `serde_json::Value`. Error messages never echo a value back.

use std::collections::BTreeMap;

use serde_json::value::RawValue;

use super::ApiError;
use crate::crypto::SecretString;
use crate::vault::{field_error, FieldErrors};

pub(super) const NOT_A_STRING: &str = "Not a valid string.";
pub(super) const MAY_NOT_BE_NULL: &str = "This field may not be null.";
pub(super) const MAY_NOT_BE_BLANK: &str = "This field may not be blank.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

pub(super) fn kind(raw: &RawValue) -> Kind {
    match raw.get().trim_start().as_bytes().first() {
        Some(b'n') => Kind::Null,
        Some(b't' | b'f') => Kind::Bool,
        Some(b'"') => Kind::String,
        Some(b'[') => Kind::Array,
        Some(b'{') => Kind::Object,
        _ => Kind::Number,
    }
}

/// A JSON object body: field name → raw value (borrowed from the body).
pub(super) struct Object<'a>(BTreeMap<String, &'a RawValue>);

impl<'a> Object<'a> {
    pub(super) fn get(&self, field: &str) -> Option<&'a RawValue> {
        self.0.get(field).copied()
    }
}

/// Parse a body as a JSON object. An empty body counts as `{}` (as DRF's parser
/// yields empty data); malformed JSON is a 400 `detail`, another JSON type a 400
/// `non_field_errors`, as DRF answers.
pub(super) fn parse_object(body: &[u8]) -> Result<Object<'_>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Object(BTreeMap::new()));
    }
    // serde_json's syntax errors name a position, never the input.
    let raw: &RawValue = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("JSON parse error - {e}")))?;
    let got = match kind(raw) {
        Kind::Object => None,
        Kind::Null => Some("NoneType"),
        Kind::Bool => Some("bool"),
        Kind::String => Some("str"),
        Kind::Array => Some("list"),
        Kind::Number if raw.get().contains(['.', 'e', 'E']) => Some("float"),
        Kind::Number => Some("int"),
    };
    if let Some(got) = got {
        return Err(ApiError::Validation(field_error(
            "non_field_errors",
            format!("Invalid data. Expected a dictionary, but got {got}."),
        )));
    }
    let map: BTreeMap<String, &RawValue> = serde_json::from_str(raw.get())
        .map_err(|e| ApiError::BadRequest(format!("JSON parse error - {e}")))?;
    Ok(Object(map))
}

/// A JSON string value, or the DRF message for what it is instead.
pub(super) fn string(raw: &RawValue) -> Result<String, &'static str> {
    match kind(raw) {
        Kind::String => serde_json::from_str(raw.get()).map_err(|_| NOT_A_STRING),
        Kind::Null => Err(MAY_NOT_BE_NULL),
        _ => Err(NOT_A_STRING),
    }
}

/// As [`string`], straight into a zeroizing buffer.
pub(super) fn secret(raw: &RawValue) -> Result<SecretString, &'static str> {
    match kind(raw) {
        Kind::String => serde_json::from_str(raw.get()).map_err(|_| NOT_A_STRING),
        Kind::Null => Err(MAY_NOT_BE_NULL),
        _ => Err(NOT_A_STRING),
    }
}

/// Collects field errors across a whole body, so one answer lists them all.
#[derive(Default)]
pub(super) struct Errors(FieldErrors);

impl Errors {
    pub(super) fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0
            .entry(field.to_owned())
            .or_default()
            .push(message.into());
    }

    /// `Ok(value)` when no error was recorded.
    pub(super) fn finish<T>(self, value: T) -> Result<T, ApiError> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(ApiError::Validation(self.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_objects_are_named_like_drf() {
        for (body, got) in [
            ("[1]", "list"),
            ("\"x\"", "str"),
            ("12", "int"),
            ("1.5", "float"),
            ("true", "bool"),
            ("null", "NoneType"),
        ] {
            match parse_object(body.as_bytes()) {
                Err(ApiError::Validation(f)) => {
                    assert!(f["non_field_errors"][0].contains(got), "{body}: {f:?}")
                }
                other => panic!("{body}: {:?}", other.err()),
            }
        }
    }

    #[test]
    fn parse_errors_do_not_echo_the_body() {
        let Err(ApiError::BadRequest(msg)) =
            parse_object(b"{\"client_secret\": \"topsecret\" oops")
        else {
            panic!("expected a parse error")
        };
        assert!(!msg.contains("topsecret"), "{msg}");
    }

    #[test]
    fn fields_are_read_by_type() {
        let obj = parse_object(br#"{"a": "x", "b": null, "c": 5, "d": "s\u0065cret"}"#).unwrap();
        assert_eq!(string(obj.get("a").unwrap()).unwrap(), "x");
        assert_eq!(string(obj.get("b").unwrap()), Err(MAY_NOT_BE_NULL));
        assert_eq!(string(obj.get("c").unwrap()), Err(NOT_A_STRING));
        assert_eq!(secret(obj.get("d").unwrap()).unwrap().expose(), "secret");
        assert!(obj.get("e").is_none());
        assert!(parse_object(b"  ").unwrap().get("a").is_none());
    }
}
