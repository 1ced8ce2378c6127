//! Plainer words for toml's own errors where the fix is known: serde's "unknown field `x`,
//! expected one of" and its 26 names become "did you mean" (or where the key belongs), and
//! "invalid type: map, expected a sequence" for `[route]` says to write `[[route]]`.

use crate::keys::{KEYS, KeyTable, closest};

use super::location::Place;

/// A clearer message for toml's `message` about the key at `place`, if there is one.
pub(super) fn explain(message: &str, place: &Place) -> Option<String> {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (unknown, expected) = rest.split_once('`')?;
        return Some(unknown_key(unknown, &names_in(expected), place));
    }
    let key = place.key.as_deref()?;
    if message.starts_with("invalid type: map, expected a sequence") {
        return match (place.route.is_some(), key) {
            (false, "route") => Some(
                "write [[route]], with two brackets: each route is one entry of an array of \
                 tables ([route] is a single table)"
                    .into(),
            ),
            (true, "sni") => Some(
                "write [[route.sni]], with two brackets: each server name entry is one entry \
                 of an array of tables ([route.sni] is a single table)"
                    .into(),
            ),
            _ => None,
        };
    }
    if let Some(rest) = message.strip_prefix("invalid type: string ")
        && let Some(value) = rest.strip_suffix(", expected a sequence")
    {
        return Some(format!(
            "expected a list: write {key} = [{value}] (brackets around the value)"
        ));
    }
    None
}

/// The names in backticks in serde's "expected one of `a`, `b`".
fn names_in(expected: &str) -> Vec<&str> {
    expected.split('`').skip(1).step_by(2).collect()
}

/// "unknown key `idle_timout`: did you mean `idle_timeout`?", or where a key that belongs to
/// another table goes.
fn unknown_key(unknown: &str, here: &[&str], place: &Place) -> String {
    if let Some(near) = closest(unknown, here) {
        return format!("unknown key `{unknown}`: did you mean `{near}`?");
    }
    let table = table_at(place);
    let elsewhere: Vec<KeyTable> = KeyTable::ALL
        .into_iter()
        .filter(|t| {
            Some(*t) != table && !(table == Some(KeyTable::Route) && *t == KeyTable::Options)
        })
        .filter(|t| KEYS.iter().any(|k| k.table == *t && k.name == unknown))
        .collect();
    match elsewhere.first() {
        Some(KeyTable::Global) => format!(
            "unknown key `{unknown}` here: it goes {} (a key written after a table's header \
             belongs to that table)",
            KeyTable::Global.place()
        ),
        Some(other) => format!("unknown key `{unknown}` here: it goes {}", other.place()),
        None => {
            format!("unknown key `{unknown}` (`man 5 spliceway.toml` lists the keys of each table)")
        }
    }
}

/// The table of the file `place` is in, when it is one of [`KeyTable`]'s.
fn table_at(place: &Place) -> Option<KeyTable> {
    let key = place.key.as_deref().unwrap_or("");
    match (&place.route, key.split_once('.')) {
        (Some(_), Some(("sni", _))) => Some(KeyTable::Sni),
        (Some(_), Some(("upstreams", _))) => Some(KeyTable::Upstreams),
        (Some(_), Some(("health_check", _))) => Some(KeyTable::HealthCheck),
        (Some(_), None) => Some(KeyTable::Route),
        (None, Some(("defaults", _))) => Some(KeyTable::Options),
        (None, None) => Some(KeyTable::Global),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(route: Option<&str>, key: &str) -> Place {
        Place {
            route: route.map(|r| format!("{r:?}")),
            key: Some(key.into()),
        }
    }

    #[test]
    fn a_misspelt_key_gets_its_nearest_name_only() {
        let message = "unknown field `idle_timout`, expected one of `name`, `idle_timeout`, \
                       `half_close_timeout`";
        assert_eq!(
            explain(message, &at(Some("s3"), "idle_timout")).unwrap(),
            "unknown key `idle_timout`: did you mean `idle_timeout`?"
        );
        let message = "unknown field `upstrem`, expected `match` or `upstream`";
        assert_eq!(
            explain(message, &at(Some("s3"), "sni.upstrem")).unwrap(),
            "unknown key `upstrem`: did you mean `upstream`?"
        );
    }

    #[test]
    fn a_key_of_another_table_is_sent_there() {
        let message = "unknown field `threads`, expected one of `allow`, `deny`";
        let hint = explain(message, &at(None, "defaults.threads")).unwrap();
        assert!(hint.contains("it goes at the top of the file"), "{hint}");
        let message = "unknown field `metrics`, expected one of `name`, `listen`";
        let hint = explain(message, &at(Some("s3"), "metrics")).unwrap();
        assert!(hint.contains("belongs to that table"), "{hint}");
        let message = "unknown field `upstream`, expected one of `allow`, `deny`";
        let hint = explain(message, &at(None, "defaults.upstream")).unwrap();
        assert!(hint.ends_with("it goes in [[route]]"), "{hint}");
        let message = "unknown field `colour`, expected one of `allow`, `deny`";
        let hint = explain(message, &at(None, "defaults.colour")).unwrap();
        assert!(hint.contains("man 5 spliceway.toml"), "{hint}");
        assert!(!hint.contains("allow"), "no list of every key: {hint}");
    }
}
