//! Partial updates of optional fields distinguish "leave as is" from "clear" from "set".

/// What a PATCH does to one optional field.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Patch<T> {
    /// The field was absent: keep the current value.
    #[default]
    Keep,
    /// The field was `null`: clear it.
    Clear,
    /// The field was given: set it.
    Set(T),
}

impl<T> Patch<T> {
    /// Applies the patch to the current value.
    pub fn apply(self, current: Option<T>) -> Option<T> {
        match self {
            Patch::Keep => current,
            Patch::Clear => None,
            Patch::Set(v) => Some(v),
        }
    }

    pub fn is_keep(&self) -> bool {
        matches!(self, Patch::Keep)
    }

    pub fn is_set(&self) -> bool {
        matches!(self, Patch::Set(_))
    }

    /// Converts the value inside, keeping the variant.
    pub fn try_map<U, E>(self, f: impl FnOnce(T) -> Result<U, E>) -> Result<Patch<U>, E> {
        Ok(match self {
            Patch::Keep => Patch::Keep,
            Patch::Clear => Patch::Clear,
            Patch::Set(v) => Patch::Set(f(v)?),
        })
    }
}

impl<T> From<Option<Option<T>>> for Patch<T> {
    fn from(v: Option<Option<T>>) -> Self {
        match v {
            None => Patch::Keep,
            Some(None) => Patch::Clear,
            Some(Some(v)) => Patch::Set(v),
        }
    }
}

impl<T> Patch<T> {
    /// Converts the value inside with an infallible function, keeping the variant.
    pub fn map_into<U>(self, f: impl FnOnce(T) -> U) -> Patch<U> {
        match self {
            Patch::Keep => Patch::Keep,
            Patch::Clear => Patch::Clear,
            Patch::Set(v) => Patch::Set(f(v)),
        }
    }
}
