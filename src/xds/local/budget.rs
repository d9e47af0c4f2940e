//! Deserialization wrappers that charge a per-parse budget for every list item, map entry and
//! string byte, so YAML aliases (which serde_yaml expands by re-reading the anchored node)
//! cannot turn a small file into unbounded memory. The budget is thread-local because serde
//! offers no way to pass context through derived impls; `enter` scopes it to one parse.
//!
//! Part of `xds::local`, on the control thread. It also holds the hand-written readers serde
//! cannot derive: `RawStringMatch` (YAML tags) and `Str` (strings that must be strings).

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{
    self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, VariantAccess, Visitor,
};

use super::policy::RawStringMatch;
use crate::state::StringMatch;

thread_local! {
    /// Units left in the current parse; `None` outside `enter` (no limit).
    static LEFT: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Restores the previous budget when dropped (parses do not nest, but a panic unwinding
/// through a parse must not leave a budget behind).
pub struct Scope(Option<u64>);

pub fn enter(units: u64) -> Scope {
    Scope(LEFT.with(|l| l.replace(Some(units))))
}

impl Drop for Scope {
    fn drop(&mut self) {
        LEFT.with(|l| l.set(self.0));
    }
}

fn charge<E: de::Error>(units: u64) -> Result<(), E> {
    LEFT.with(|l| match l.get() {
        None => Ok(()),
        Some(left) if left >= units => {
            l.set(Some(left - units));
            Ok(())
        }
        Some(_) => Err(E::custom(
            "the document expands to far more data than its size (YAML aliases?); refusing it",
        )),
    })
}

/// A string scalar (YAML numbers and booleans read as their text, as serde_yaml does).
#[derive(Debug, Default)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                charge(1 + v.len() as u64)?;
                Ok(Text(v.to_owned()))
            }
        }
        d.deserialize_str(V)
    }
}

/// A YAML sequence.
#[derive(Debug)]
pub struct List<T>(pub Vec<T>);

impl<T> Default for List<T> {
    fn default() -> Self {
        List(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<List<T>, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = List<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<List<T>, A::Error> {
                let mut out = Vec::new();
                while let Some(x) = seq.next_element()? {
                    charge(1)?;
                    out.push(x);
                }
                Ok(List(out))
            }
        }
        d.deserialize_seq(V(PhantomData))
    }
}

/// A YAML mapping, in document order, duplicates kept (so callers can reject them;
/// a `HashMap` would silently keep the last).
#[derive(Debug)]
pub struct Entries<K, V>(pub Vec<(K, V)>);

impl<K, V> Default for Entries<K, V> {
    fn default() -> Self {
        Entries(Vec::new())
    }
}

impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de> for Entries<K, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Entries<K, V>, D::Error> {
        struct Vis<K, V>(PhantomData<(K, V)>);
        impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Visitor<'de> for Vis<K, V> {
            type Value = Entries<K, V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<K, V>, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    charge(1)?;
                    out.push(entry);
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(Vis(PhantomData))
    }
}

const VARIANTS: &[&str] = &["Exact", "Prefix", "Suffix", "Presence"];

/// A string scalar only: a plain `1`, `true` or `~` is refused as ztunnel refuses it in a
/// workload's fields (ztunnel reads those through a flattened struct, which sees YAML's
/// resolved type rather than the scalar's text).
#[derive(Debug, Default)]
pub struct Str(pub String);

impl<'de> Deserialize<'de> for Str {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Str, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Str;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str, E> {
                charge(1 + v.len() as u64)?;
                Ok(Str(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

impl From<Str> for Text {
    fn from(s: Str) -> Text {
        Text(s.0)
    }
}

/// ztunnel's form: a YAML tag naming the kind, `!Exact v`, `!Prefix v`, `!Suffix v`,
/// `!Presence []` (or `!Presence` with no value). The tag name and value are charged like any
/// string, so tags cannot escape the budget. The old `{Exact: v}` map form, which ztunnel
/// refuses, gets an error saying how to write it.
impl<'de> Deserialize<'de> for RawStringMatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawStringMatch, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawStringMatch;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a tagged string match: !Exact, !Prefix, !Suffix or !Presence")
            }
            fn visit_enum<A: de::EnumAccess<'de>>(self, e: A) -> Result<RawStringMatch, A::Error> {
                let (kind, value) = e.variant::<Text>()?;
                let m = match kind.0.as_str() {
                    "Exact" => StringMatch::Exact(value.newtype_variant::<Text>()?.0.into()),
                    "Prefix" => StringMatch::Prefix(value.newtype_variant::<Text>()?.0.into()),
                    "Suffix" => StringMatch::Suffix(value.newtype_variant::<Text>()?.0.into()),
                    "Presence" => {
                        value.tuple_variant(0, NoValue)?;
                        StringMatch::Presence
                    }
                    other => return Err(de::Error::unknown_variant(other, VARIANTS)),
                };
                Ok(RawStringMatch(m))
            }
            fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<RawStringMatch, A::Error> {
                Err(de::Error::custom(
                    "a string match is a YAML tag, as ztunnel writes it: `!Exact value` \
                     (also !Prefix, !Suffix, `!Presence []`), not a map like `Exact: value`",
                ))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawStringMatch, E> {
                Err(de::Error::custom(format_args!(
                    "string match {} has no kind: write `!Exact value` (or !Prefix, !Suffix, \
                     `!Presence []`)",
                    crate::state::excerpt(v)
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// `!Presence` carries no value: `!Presence []` as ztunnel writes it, or nothing at all.
struct NoValue;

impl<'de> Visitor<'de> for NoValue {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no value for !Presence (`!Presence []`)")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        match seq.next_element::<IgnoredAny>()? {
            None => Ok(()),
            Some(_) => Err(de::Error::invalid_length(1, &self)),
        }
    }
}
