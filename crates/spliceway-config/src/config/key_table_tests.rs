//! The table of keys ([`crate::KEYS`], the source of spliceway.toml(5)) against the file as it
//! is read: the same keys in each table as the raw structs accept, defaults that give the same
//! relay as leaving the key out, and every key shown in the packaged example.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;
use serde::de::{self, Visitor};

use super::Config;
use super::raw::{RawConfig, RawHealthCheck, RawOptions, RawRoute, RawSni, RawUpstreamEntry};
use crate::{KEYS, KeyTable, keys_of};

/// A deserializer that only records the field names a struct asks for, then stops: the keys
/// serde will accept, read from the derived code itself.
struct FieldNames(Vec<&'static str>);

impl<'de> de::Deserializer<'de> for &mut FieldNames {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        self.0 = fields.to_vec();
        Err(de::Error::custom("recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

fn fields_of<T: for<'de> Deserialize<'de>>() -> BTreeSet<&'static str> {
    let mut names = FieldNames(Vec::new());
    let _ = T::deserialize(&mut names);
    assert!(!names.0.is_empty(), "no fields recorded");
    names.0.into_iter().collect()
}

fn table(table: KeyTable) -> BTreeSet<&'static str> {
    keys_of(table).map(|k| k.name).collect()
}

#[test]
fn every_key_the_file_accepts_is_in_the_table_and_nothing_else() {
    // `defaults` and `route` (and a route's `sni`) are the tables themselves.
    let mut global = fields_of::<RawConfig>();
    assert!(global.remove("defaults") && global.remove("route"));
    assert_eq!(global, table(KeyTable::Global), "top-level keys");

    assert_eq!(
        fields_of::<RawOptions>(),
        table(KeyTable::Options),
        "[defaults] keys"
    );

    let mut route = fields_of::<RawRoute>();
    assert!(route.remove("sni") && route.remove("upstreams"));
    let expected: BTreeSet<_> = table(KeyTable::Route)
        .union(&table(KeyTable::Options))
        .copied()
        .collect();
    assert_eq!(route, expected, "[[route]] keys");

    assert_eq!(fields_of::<RawSni>(), table(KeyTable::Sni), "[[route.sni]]");
    assert_eq!(
        fields_of::<RawUpstreamEntry>(),
        table(KeyTable::Upstreams),
        "[[route.upstreams]]"
    );
    assert_eq!(
        fields_of::<RawHealthCheck>(),
        table(KeyTable::HealthCheck),
        "health_check"
    );
}

#[test]
fn no_key_is_listed_twice_in_one_table() {
    let mut seen = BTreeSet::new();
    for key in KEYS {
        assert!(seen.insert((key.table, key.name)), "{} twice", key.name);
        assert!(
            !key.description.is_empty() && !key.kind.is_empty(),
            "{}",
            key.name
        );
        assert!(!key.default.is_empty(), "{}", key.name);
    }
}

/// The route of the files compared below, after `lines` (relay-wide keys) and with `own` keys.
fn file_with(global: &str, own: &str, sni: bool) -> String {
    file_for(global, own, sni, false)
}

/// As [`file_with`]; `connect`: an `http-connect` route.
fn file_for(global: &str, own: &str, sni: bool, connect: bool) -> String {
    let target = if connect {
        "upstream = \"http-connect\"\nconnect_allow = [\"a.test:443\"]\n\
         upstream_allow = [\"10.0.0.0/8\"]\n"
    } else if sni {
        "[[route.sni]]\nmatch = \"a.test\"\nupstream = \"127.0.0.1:9\"\n"
    } else {
        "upstream = \"127.0.0.1:9\"\n"
    };
    format!("{global}\n[[route]]\nname = \"r\"\nlisten = [\"127.0.0.1:0\"]\n{own}\n{target}")
}

/// What a file makes, in terms that can be compared: its summary and its routes' options.
fn outcome(text: &str) -> (String, String) {
    let config = Config::from_str(text, Path::new("spliceway.toml"))
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    let routes = config.routes().unwrap();
    let options = format!("{:?}", routes[0].connection_options());
    (config.summary(), options)
}

/// Each default written as a TOML value gives the relay that leaving the key out gives.
#[test]
fn each_default_is_what_leaving_the_key_out_gives() {
    let mut checked = 0;
    for key in KEYS.iter().filter(|k| !k.default.starts_with('(')) {
        let line = format!("{} = {}", key.name, key.default);
        // `hello_timeout` is for SNI routes only.
        let sni = key.name == "hello_timeout" || key.table == KeyTable::Sni;
        let (with, without) = match key.table {
            KeyTable::Global => (file_with(&line, "", sni), file_with("", "", sni)),
            // `request_timeout` is for CONNECT routes only.
            KeyTable::Options | KeyTable::Route if key.name == "request_timeout" => (
                file_for("", &line, false, true),
                file_for("", "", false, true),
            ),
            KeyTable::Options | KeyTable::Route => {
                (file_with("", &line, sni), file_with("", "", sni))
            }
            // Inside tables of their own: their defaults are held by the tests of
            // config/upstreams.rs.
            _ => continue,
        };
        assert_eq!(
            outcome(&with),
            outcome(&without),
            "{line} is not the default"
        );
        checked += 1;
    }
    assert!(checked > 20, "{checked}");
}

/// `packaging/spliceway.toml` shows every key, set or commented out, so that an operator
/// reading the installed file meets each one.
#[test]
fn the_packaged_example_shows_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/spliceway.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let shown: BTreeSet<&str> = text
        .lines()
        .map(|l| l.trim_start_matches('#').trim_start())
        .filter_map(|l| l.split_once(" = ").map(|(key, _)| key.trim()))
        .collect();
    let missing: Vec<&str> = KEYS
        .iter()
        .map(|k| k.name)
        .filter(|name| !shown.contains(name))
        .collect();
    assert!(missing.is_empty(), "not in the example: {missing:?}");
}
