//! Header edits on either side of an exchange: the request's headers on
//! their way upstream, or the response's on their way to the client. The
//! filters that rewrite headers (`header-rewrite`, `transform`) describe
//! their edits as [`HeaderEdit`]s and apply them with [`Http::edit_headers`].

use crate::host::{self, Map};
use crate::status::HostResult;
use crate::{Filter, Http};

/// Which headers an edit applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The request's headers (before they go upstream).
    Request,
    /// The response's headers (before they go to the client).
    Response,
}

impl Side {
    fn map(self) -> Map {
        match self {
            Self::Request => Map::Request,
            Self::Response => Map::Response,
        }
    }
}

/// One header edit. `V` is how a filter describes a value: a literal
/// string, or a template rendered for each request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderEdit<V> {
    /// Adds header `name` when the message has none.
    Add {
        /// The header's name.
        name: String,
        /// Its value.
        value: V,
    },
    /// Makes `value` the only value of header `name`.
    Set {
        /// The header's name.
        name: String,
        /// Its value.
        value: V,
    },
    /// Adds one more value to header `name`.
    Append {
        /// The header's name.
        name: String,
        /// The value added.
        value: V,
    },
    /// Removes every value of header `name`.
    Remove {
        /// The header's name.
        name: String,
    },
    /// Moves every value of header `from` to header `to`, replacing those
    /// of `to`; nothing happens when there is no `from`.
    Rename {
        /// The header renamed.
        from: String,
        /// Its new name.
        to: String,
    },
}

impl<F: Filter> Http<'_, F> {
    /// The first value of header `name` of `side`.
    pub fn header(&self, side: Side, name: &str) -> HostResult<Option<String>> {
        host::get_map_value(side.map(), name)
    }

    /// Every header of `side` (pseudo-headers first).
    pub fn headers(&self, side: Side) -> HostResult<Vec<(String, String)>> {
        host::get_map(side.map())
    }

    /// Makes `value` the only value of header `name` of `side`.
    pub fn set_header(&mut self, side: Side, name: &str, value: &str) -> HostResult<()> {
        host::replace_map_value(side.map(), name, value)
    }

    /// Adds a value to header `name` of `side`.
    pub fn append_header(&mut self, side: Side, name: &str, value: &str) -> HostResult<()> {
        host::add_map_value(side.map(), name, value)
    }

    /// Removes header `name` of `side`.
    pub fn remove_header(&mut self, side: Side, name: &str) -> HostResult<()> {
        host::remove_map_value(side.map(), name)
    }

    /// Applies `edits` to the headers of `side`, in order. `value(v)` gives
    /// the text of a value described by `v` (for this request); an edit whose
    /// value is `None` is skipped.
    pub fn edit_headers<V>(
        &mut self,
        side: Side,
        edits: &[HeaderEdit<V>],
        mut value: impl FnMut(&V) -> Option<String>,
    ) -> HostResult<()> {
        for edit in edits {
            match edit {
                HeaderEdit::Add { name, value: v } => {
                    if self.header(side, name)?.is_none()
                        && let Some(value) = value(v)
                    {
                        self.set_header(side, name, &value)?;
                    }
                }
                HeaderEdit::Set { name, value: v } => {
                    if let Some(value) = value(v) {
                        self.set_header(side, name, &value)?;
                    }
                }
                HeaderEdit::Append { name, value: v } => {
                    if let Some(value) = value(v) {
                        self.append_header(side, name, &value)?;
                    }
                }
                HeaderEdit::Remove { name } => self.remove_header(side, name)?,
                HeaderEdit::Rename { from, to } => self.rename_header(side, from, to)?,
            }
        }
        Ok(())
    }

    fn rename_header(&mut self, side: Side, from: &str, to: &str) -> HostResult<()> {
        if from.eq_ignore_ascii_case(to) || self.header(side, from)?.is_none() {
            return Ok(());
        }
        let values: Vec<String> = self
            .headers(side)?
            .into_iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(from))
            .map(|(_, v)| v)
            .collect();
        self.remove_header(side, from)?;
        self.remove_header(side, to)?;
        for value in &values {
            self.append_header(side, to, value)?;
        }
        Ok(())
    }
}
