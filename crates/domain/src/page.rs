//! Keyset pagination. A page carries its items and, when more follow, an opaque cursor that
//! names the last item's sort key; the next request continues strictly after it, so pages
//! stay stable and cheap however deep the client goes.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, FieldError};

/// The most items one page may hold.
pub const MAX_PAGE_SIZE: u32 = 200;
/// The page size when the client names none.
pub const DEFAULT_PAGE_SIZE: u32 = 50;

#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// A page size between 1 and [`MAX_PAGE_SIZE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize(u32);

impl PageSize {
    pub fn new(n: Option<u32>) -> Result<Self, FieldError> {
        match n {
            None => Ok(Self(DEFAULT_PAGE_SIZE)),
            Some(n) if (1..=MAX_PAGE_SIZE).contains(&n) => Ok(Self(n)),
            Some(_) => Err(FieldError::new(
                "limit",
                "out_of_range",
                format!("must be between 1 and {MAX_PAGE_SIZE}"),
            )),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for PageSize {
    fn default() -> Self {
        Self(DEFAULT_PAGE_SIZE)
    }
}

/// Encodes a cursor value as an opaque URL-safe string.
pub fn encode_cursor<C: Serialize>(c: &C) -> String {
    // Serialising plain data structs cannot fail; an empty cursor would simply end paging.
    let json = serde_json::to_vec(c).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

/// Decodes a cursor produced by [`encode_cursor`]; anything else is a 400-class error.
pub fn decode_cursor<C: DeserializeOwned>(s: &str) -> Result<C, Error> {
    let invalid = || {
        Error::Validation(vec![FieldError::new(
            "cursor",
            "invalid_cursor",
            "is not a cursor returned by this endpoint for this sort order",
        )])
    };
    let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| invalid())?;
    serde_json::from_slice(&bytes).map_err(|_| invalid())
}
