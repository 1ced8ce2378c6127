//! `rate_limit`, `client_rate_limit` and `route_rate_limit`: a table of `up`, `down` (rates,
//! see `rate.rs`) and an optional `burst` (a size), each error at its value.

use toml::Spanned;

use spliceway::{Rate, RateLimit};

use super::super::raw::{RawRateLimit, Scalar};
use super::{Checker, Result};

impl Checker<'_> {
    /// The limit a `rate_limit`-style table describes (`context` names the key).
    pub(super) fn rate_limit(
        &self,
        raw: Option<&Spanned<RawRateLimit>>,
        context: String,
    ) -> Result<Option<RateLimit>> {
        let Some(raw) = raw else { return Ok(None) };
        let table = raw.get_ref();
        let up = self.rate(table.up.as_ref(), format!("{context}.up"))?;
        let down = self.rate(table.down.as_ref(), format!("{context}.down"))?;
        if up.is_none() && down.is_none() {
            return Err(self.error(
                raw.span(),
                context,
                "give up (client to upstream), down (upstream to client) or both, e.g. \
                 { up = \"600mbit\", down = \"1gbit\" }",
            ));
        }
        let mut limit = RateLimit::new(up, down);
        if let Some(burst) = &table.burst {
            limit = limit.with_burst(self.size(burst, format!("{context}.burst"))? as u64);
        }
        Ok(Some(limit))
    }

    fn rate(&self, value: Option<&Spanned<Scalar>>, context: String) -> Result<Option<Rate>> {
        let Some(value) = value else { return Ok(None) };
        let fail = |message: String| Err(self.error(value.span(), context.clone(), message));
        match value.get_ref() {
            Scalar::Str(text) => match crate::parse_rate(text) {
                Ok(bytes) => Ok(Rate::bytes_per_second(bytes)),
                Err(e) => fail(format!("invalid rate: {e}")),
            },
            Scalar::Int(n) => fail(format!(
                "{n} has no unit: write e.g. \"{n}mbit\" (bits a second) or \"{n}MB\" (bytes a \
                 second)"
            )),
            Scalar::Bool(b) => fail(format!("expected a rate such as \"600mbit\", not {b}")),
        }
    }
}
