//! The leaf settings of a config struct, read from its JSON schema
//! (`schemars`), and the conversion of a flag's text to a TOML value of the
//! setting's kind.
//!
//! A property whose schema is an object with `properties` (a nested struct,
//! or an `Option` of one) is a table: its fields become leaves with the
//! table's name in front. Every other property is a leaf, of a [`Kind`]
//! read from its schema: integer, number, boolean, string, a string enum
//! (its `enum` list, or the `const`s of a `oneOf` when variants carry doc
//! comments), a list of one of those, or anything else (a map, a list of
//! tables, a data-carrying enum), which a flag gives as a TOML literal.
//! `Option<T>` is `T`'s kind: the schema's `"null"` alternative is dropped.

use serde_json::Value;

/// How a flag's text becomes a TOML value.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Kind {
    Int,
    Float,
    Bool,
    Str,
    /// A string from a fixed set.
    Enum(Vec<Variant>),
    /// Comma-separated items (or the flag repeated).
    List(Box<Kind>),
    /// A TOML literal: `'{ a = 1 }'`, `'[{ x = 1 }]'`.
    Toml,
}

/// An enum variant's name and doc comment.
pub(super) type Variant = (String, Option<String>);

/// One leaf setting.
#[derive(Debug, Clone)]
pub(super) struct Field {
    /// Table names, then the field name: `["heartbeat", "wired_ms"]`.
    pub key: Vec<String>,
    pub kind: Kind,
    /// The doc comment, paragraphs separated by a blank line.
    pub doc: Option<String>,
}

impl Field {
    /// `heartbeat.wired_ms`, the clap id and how errors name the key.
    pub fn dotted(&self) -> String {
        self.key.join(".")
    }

    /// `heartbeat-wired-ms`, the long flag.
    pub fn flag(&self) -> String {
        self.key.join("-").replace('_', "-")
    }

    /// `[heartbeat]`, the help heading of a nested field.
    pub fn table(&self) -> Option<String> {
        let (_, parents) = self.key.split_last()?;
        (!parents.is_empty()).then(|| format!("[{}]", parents.join(".")))
    }
}

/// Deeper nesting than this is taken for a recursive type.
const MAX_DEPTH: usize = 8;

/// The leaves of the root schema `root`, in declaration order.
pub(super) fn collect(root: &Value) -> Result<Vec<Field>, String> {
    let mut out = Vec::new();
    walk(root, root, &mut Vec::new(), &mut out)?;
    Ok(out)
}

fn walk(
    root: &Value,
    table: &Value,
    prefix: &mut Vec<String>,
    out: &mut Vec<Field>,
) -> Result<(), String> {
    if prefix.len() > MAX_DEPTH {
        return Err(format!("{} nests too deep", prefix.join(".")));
    }
    let Some(props) = table.get("properties").and_then(Value::as_object) else {
        return Err(format!("{:?} is not a struct", prefix.join(".")));
    };
    for (name, prop) in props {
        let target = resolve(root, non_null(prop))?;
        prefix.push(name.clone());
        if is_table(target) {
            walk(root, target, prefix, out)?;
        } else {
            out.push(Field {
                key: prefix.clone(),
                kind: kind(root, target)?,
                doc: doc(prop).or_else(|| doc(target)),
            });
        }
        prefix.pop();
    }
    Ok(())
}

fn is_table(s: &Value) -> bool {
    s.get("properties").is_some_and(Value::is_object)
}

/// Follows a `$ref` (`#/$defs/Name`) to the schema it names.
fn resolve<'a>(root: &'a Value, s: &'a Value) -> Result<&'a Value, String> {
    let mut s = s;
    for _ in 0..MAX_DEPTH {
        if let Some([one]) = s.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
            s = one;
            continue;
        }
        let Some(r) = s.get("$ref").and_then(Value::as_str) else {
            return Ok(s);
        };
        let pointer = r
            .strip_prefix('#')
            .ok_or_else(|| format!("external schema reference {r}"))?;
        s = root
            .pointer(pointer)
            .ok_or_else(|| format!("dangling schema reference {r}"))?;
    }
    Err("schema references loop".into())
}

/// `s` without its `null` alternative (the schema of an `Option<T>` is
/// `T`'s with `"null"` added to `type`, or `anyOf: [T, {type: null}]`).
fn non_null(s: &Value) -> &Value {
    let is_null = |v: &Value| v.get("type").and_then(Value::as_str) == Some("null");
    match s.get("anyOf").and_then(Value::as_array) {
        Some(alts) if alts.len() == 2 && alts.iter().any(is_null) => {
            alts.iter().find(|v| !is_null(v)).map_or(s, non_null)
        }
        _ => s,
    }
}

/// The schema's `type`, ignoring `"null"`; `None` when absent or several.
fn type_name(s: &Value) -> Option<&str> {
    match s.get("type")? {
        Value::String(t) => Some(t),
        Value::Array(ts) => {
            let mut rest = ts.iter().filter_map(Value::as_str).filter(|t| *t != "null");
            let t = rest.next()?;
            rest.next().is_none().then_some(t)
        }
        _ => None,
    }
}

fn kind(root: &Value, s: &Value) -> Result<Kind, String> {
    if let Some(values) = enum_values(root, s)? {
        return Ok(Kind::Enum(values));
    }
    Ok(match type_name(s) {
        Some("integer") => Kind::Int,
        Some("number") => Kind::Float,
        Some("boolean") => Kind::Bool,
        Some("string") => Kind::Str,
        Some("array") => {
            let item = s
                .get("items")
                .map(|i| resolve(root, non_null(i)))
                .transpose()?;
            match item {
                Some(i) if !is_table(i) => match kind(root, i)? {
                    k @ (Kind::Int | Kind::Float | Kind::Bool | Kind::Str | Kind::Enum(_)) => {
                        Kind::List(Box::new(k))
                    }
                    _ => Kind::Toml,
                },
                _ => Kind::Toml,
            }
        }
        _ => Kind::Toml,
    })
}

/// The values of a string enum, or `None` if `s` is not one.
fn enum_values(root: &Value, s: &Value) -> Result<Option<Vec<Variant>>, String> {
    if let Some(vals) = s.get("enum").and_then(Value::as_array) {
        let names: Option<Vec<_>> = vals.iter().map(Value::as_str).collect();
        let doc = doc(s);
        return Ok(names.map(|n| n.into_iter().map(|v| (v.to_owned(), doc.clone())).collect()));
    }
    if let Some(c) = s.get("const").and_then(Value::as_str) {
        return Ok(Some(vec![(c.to_owned(), doc(s))]));
    }
    let Some(alts) = s.get("oneOf").and_then(Value::as_array) else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for alt in alts {
        match enum_values(root, resolve(root, alt)?)? {
            Some(vals) => out.extend(vals),
            None => return Ok(None),
        }
    }
    Ok(Some(out))
}

/// A schema's doc comment: `title` and `description`, each line of a
/// paragraph joined into one.
fn doc(s: &Value) -> Option<String> {
    let parts: Vec<&str> = ["title", "description"]
        .iter()
        .filter_map(|k| s.get(k).and_then(Value::as_str))
        .collect();
    if parts.is_empty() {
        return None;
    }
    let text = parts.join("\n\n");
    let paragraphs: Vec<String> = text
        .split("\n\n")
        .map(|p| {
            let mut out = String::new();
            for line in p.lines().map(str::trim) {
                let item = line.starts_with("- ") || line.starts_with("* ");
                if !out.is_empty() {
                    out.push(if item { '\n' } else { ' ' });
                }
                out.push_str(line);
            }
            out
        })
        .filter(|p| !p.is_empty())
        .collect();
    (!paragraphs.is_empty()).then(|| paragraphs.join("\n\n"))
}

impl Kind {
    /// The value name shown in `--help`.
    pub fn value_name(&self, field: &Field) -> String {
        match self {
            Kind::Int => "INT".into(),
            Kind::Float => "NUM".into(),
            Kind::Bool => "BOOL".into(),
            Kind::Toml => "TOML".into(),
            Kind::Str | Kind::Enum(_) => field
                .key
                .last()
                .map_or("VALUE".into(), |k| k.to_uppercase()),
            Kind::List(item) => format!("{},..", item.value_name(field)),
        }
    }

    /// The TOML value for a flag's `raw` texts (one unless a list).
    pub fn parse(&self, raw: &[&str]) -> Result<toml::Value, String> {
        match (self, raw) {
            (Kind::List(_), [""]) => Ok(toml::Value::Array(Vec::new())),
            (Kind::List(item), items) => items
                .iter()
                .map(|r| item.parse(&[r]))
                .collect::<Result<_, _>>()
                .map(toml::Value::Array),
            (_, [r]) => self.scalar(r),
            (_, _) => Err("expected one value".into()),
        }
    }

    fn scalar(&self, r: &str) -> Result<toml::Value, String> {
        let t = r.trim();
        match self {
            Kind::Int => t
                .replace('_', "")
                .parse::<i64>()
                .map(toml::Value::Integer)
                .map_err(|e| format!("expected an integer ({e})")),
            Kind::Float => t
                .replace('_', "")
                .parse::<f64>()
                .map(toml::Value::Float)
                .map_err(|e| format!("expected a number ({e})")),
            Kind::Bool => match t {
                "true" => Ok(toml::Value::Boolean(true)),
                "false" => Ok(toml::Value::Boolean(false)),
                _ => Err("expected true or false".into()),
            },
            Kind::Str | Kind::Enum(_) => Ok(toml::Value::String(r.to_owned())),
            Kind::List(_) => self.parse(&[r]),
            Kind::Toml => toml::from_str::<toml::Table>(&format!("v = {r}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .ok_or_else(|| "expected a TOML value, e.g. '{ key = 1 }' or '[1, 2]'".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kinds_from_schema_shapes() {
        let root = json!({
            "properties": {
                "a": {"type": ["integer", "null"], "description": "Line one\nline two.\n\nSecond."},
                "b": {"$ref": "#/$defs/Mode"},
                "c": {"type": "array", "items": {"type": "string"}},
                "d": {"anyOf": [{"$ref": "#/$defs/T"}, {"type": "null"}]},
                "e": {"type": "object", "additionalProperties": {"type": "integer"}},
                "f": {"oneOf": [{"type": "string", "enum": ["x"]}, {"type": "string", "const": "y", "description": "Why."}]}
            },
            "$defs": {
                "Mode": {"type": "string", "enum": ["on", "off"]},
                "T": {"properties": {"n": {"type": "number"}}}
            }
        });
        let f = collect(&root).expect("fields");
        let keys: Vec<String> = f.iter().map(Field::dotted).collect();
        assert_eq!(keys, ["a", "b", "c", "d.n", "e", "f"]);
        assert_eq!(f[0].kind, Kind::Int);
        assert_eq!(f[0].doc.as_deref(), Some("Line one line two.\n\nSecond."));
        assert!(matches!(&f[1].kind, Kind::Enum(v) if v.len() == 2));
        assert_eq!(f[2].kind, Kind::List(Box::new(Kind::Str)));
        assert_eq!(f[3].kind, Kind::Float);
        assert_eq!(f[3].flag(), "d-n");
        assert_eq!(f[3].table().as_deref(), Some("[d]"));
        assert_eq!(f[4].kind, Kind::Toml);
        assert_eq!(
            f[5].kind,
            Kind::Enum(vec![("x".into(), None), ("y".into(), Some("Why.".into()))])
        );
    }

    #[test]
    fn flag_text_becomes_typed_toml() {
        assert_eq!(Kind::Int.parse(&["4_096"]), Ok(toml::Value::Integer(4096)));
        assert!(Kind::Int.parse(&["4k"]).is_err());
        assert_eq!(Kind::Float.parse(&["1"]), Ok(toml::Value::Float(1.0)));
        assert!(Kind::Bool.parse(&["yes"]).is_err());
        let list = Kind::List(Box::new(Kind::Int));
        assert_eq!(
            list.parse(&["1", "2"]),
            Ok(toml::Value::Array(vec![1.into(), 2.into()]))
        );
        assert_eq!(list.parse(&[""]), Ok(toml::Value::Array(Vec::new())));
        let t = Kind::Toml.parse(&["{ a = 1 }"]).expect("a table");
        assert_eq!(t.get("a"), Some(&toml::Value::Integer(1)));
        assert!(Kind::Toml.parse(&["{ a = "]).is_err());
    }
}
