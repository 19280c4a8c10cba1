//! Changes made through the admin API, and how they combine with the file.
//!
//! The YAML file stays the starting configuration. Each object changed through
//! the API (a channel, model group, client token, budget, or the routing
//! settings) is kept in the store as one change over the file:
//!
//! - a **patch** (JSON merge patch) is laid over what the file says of that
//!   object, so file edits to the fields the API did not touch still apply;
//! - a **replacement** (an object created, or replaced whole, through the API)
//!   stands on its own: the file no longer says anything about it;
//! - a **deletion** hides what the file declares under that name.
//!
//! The effective configuration is the file with every stored change laid over
//! it, loaded by the same parser as the file (so it is checked the same way);
//! `smart-router config export` writes it out as YAML. Keys never leave through
//! the API: a literal key is shown as `<key id>` (a `${ENV}` reference as it is),
//! and a write that sends `<key id>` back keeps the key it stands for.

pub mod store;

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// What kind of object a change is about, and where it lives in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Channel,
    Group,
    Token,
    Budget,
    Routing,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Channel => "channel",
            Kind::Group => "group",
            Kind::Token => "token",
            Kind::Budget => "budget",
            Kind::Routing => "routing",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        [Kind::Channel, Kind::Group, Kind::Token, Kind::Budget, Kind::Routing].into_iter().find(|k| k.as_str() == s)
    }

    /// The object's path from the config's root.
    fn path(self) -> &'static [&'static str] {
        match self {
            Kind::Channel => &["channels"],
            Kind::Group => &["model_groups"],
            Kind::Token => &["auth", "api_tokens"],
            Kind::Budget => &["budgets"],
            Kind::Routing => &["routing"],
        }
    }
}

/// How a stored change applies to the file's object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Replace,
    Patch,
    Delete,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Replace => "replace",
            Op::Patch => "patch",
            Op::Delete => "delete",
        }
    }

    pub fn parse(s: &str) -> Option<Op> {
        [Op::Replace, Op::Patch, Op::Delete].into_iter().find(|o| o.as_str() == s)
    }
}

/// One stored change.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub op: Op,
    /// The whole object (replace), the merge patch (patch), or null (delete).
    pub doc: Value,
}

/// Every stored change, by kind and name (routing's name is empty).
pub type Overlays = BTreeMap<(Kind, String), Change>;

/// Why an admin change was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("{0} \"{1}\" does not exist")]
    NotFound(&'static str, String),
    #[error("{0} \"{1}\" exists already")]
    Exists(&'static str, String),
    #[error("{0}")]
    Invalid(String),
    /// The config with the change does not load or build a table.
    #[error("{0}")]
    Config(String),
    #[error("cannot store the change: {0}")]
    Store(String),
}

/// What an API request asks for one object.
#[derive(Debug, Clone)]
pub enum Ask {
    /// A new object (it must not exist).
    Create(Value),
    /// The whole object (it must exist).
    Replace(Value),
    /// A merge patch (the object must exist; routing always does).
    Patch(Value),
    Delete,
}

impl Ask {
    pub fn action(&self) -> &'static str {
        match self {
            Ask::Create(_) => "create",
            Ask::Replace(_) => "replace",
            Ask::Patch(_) => "patch",
            Ask::Delete => "delete",
        }
    }
}

/// The config file's text as a JSON value (what changes are laid over).
pub fn file_value(text: &str) -> Result<Value, String> {
    let value: Value = yaml_serde::from_str(text).map_err(|e| e.to_string())?;
    Ok(if value.is_null() { Value::Object(Map::new()) } else { value })
}

/// The file with every change laid over it.
pub fn effective(file: &Value, overlays: &Overlays) -> Value {
    let mut root = file.clone();
    for ((kind, name), change) in overlays {
        let base = object(&root, *kind, name).cloned();
        let after = match change.op {
            Op::Delete => None,
            Op::Replace => Some(change.doc.clone()),
            Op::Patch => match (base, *kind) {
                (Some(b), _) => Some(merge_patch(b, &change.doc)),
                // Routing is there even when the file leaves it out.
                (None, Kind::Routing) => Some(merge_patch(Value::Object(Map::new()), &change.doc)),
                // A patch over an object the file dropped since: nothing to patch.
                (None, _) => None,
            },
        };
        set_object(&mut root, *kind, name, after);
    }
    root
}

/// The effective configuration as YAML, for the config parser and for export.
pub fn to_yaml(value: &Value) -> Result<String, String> {
    yaml_serde::to_string(value).map_err(|e| e.to_string())
}

/// The stored change after `ask` (None: no change stored for the object any
/// more, so the file alone says what it is).
pub fn apply_ask(
    file: &Value,
    overlays: &Overlays,
    kind: Kind,
    name: &str,
    ask: Ask,
) -> Result<Option<Change>, ChangeError> {
    let exists = object(&effective(file, overlays), kind, name).is_some() || kind == Kind::Routing;
    let what = kind.as_str();
    let named = |mut doc: Value| -> Result<Value, ChangeError> {
        let Some(fields) = doc.as_object_mut() else {
            return Err(ChangeError::Invalid(format!("a {what} must be a JSON object")));
        };
        if let Some(field) = id_field(kind) {
            match fields.get(field) {
                Some(Value::String(s)) if s != name => {
                    return Err(ChangeError::Invalid(format!("{field} \"{s}\" does not match \"{name}\"")))
                }
                _ => {
                    fields.insert(field.into(), Value::String(name.into()));
                }
            }
        }
        Ok(doc)
    };
    let stored = overlays.get(&(kind, name.to_string()));
    match ask {
        Ask::Create(_) if exists => Err(ChangeError::Exists(what, name.into())),
        Ask::Create(doc) => Ok(Some(Change { op: Op::Replace, doc: named(doc)? })),
        _ if !exists => Err(ChangeError::NotFound(what, name.into())),
        Ask::Replace(doc) => Ok(Some(Change { op: Op::Replace, doc: named(doc)? })),
        // Deleting routing's changes goes back to what the file says; deleting an
        // object hides the file's (if it has one) and drops the API's.
        Ask::Delete if kind == Kind::Routing || object(file, kind, name).is_none() => Ok(None),
        Ask::Delete => Ok(Some(Change { op: Op::Delete, doc: Value::Null })),
        Ask::Patch(patch) => {
            if !patch.is_object() {
                return Err(ChangeError::Invalid(format!("a {what} patch must be a JSON object")));
            }
            if let Some(field) = id_field(kind) {
                if patch.get(field).is_some_and(|v| v.as_str() != Some(name)) {
                    return Err(ChangeError::Invalid(format!("{field} cannot be changed; create a new {what}")));
                }
            }
            Ok(Some(match stored {
                Some(Change { op: Op::Replace, doc }) => {
                    Change { op: Op::Replace, doc: merge_patch(doc.clone(), &patch) }
                }
                Some(Change { op: Op::Patch, doc }) => {
                    Change { op: Op::Patch, doc: compose_patches(doc.clone(), patch) }
                }
                _ => Change { op: Op::Patch, doc: patch },
            }))
        }
    }
}

/// The field naming an object inside it (groups are named by their key).
fn id_field(kind: Kind) -> Option<&'static str> {
    match kind {
        Kind::Channel | Kind::Token | Kind::Budget => Some("id"),
        Kind::Group | Kind::Routing => None,
    }
}

fn container(root: &Value, kind: Kind) -> Option<&Value> {
    kind.path().iter().try_fold(root, |v, key| v.get(*key))
}

/// One object of the config, by kind and name.
pub fn object<'a>(root: &'a Value, kind: Kind, name: &str) -> Option<&'a Value> {
    let c = container(root, kind)?;
    match kind {
        Kind::Routing => Some(c),
        Kind::Group => c.get(name),
        _ => c.as_array()?.iter().find(|o| o.get("id").and_then(Value::as_str) == Some(name)),
    }
}

pub fn object_mut<'a>(root: &'a mut Value, kind: Kind, name: &str) -> Option<&'a mut Value> {
    let c = kind.path().iter().try_fold(root, |v, key| v.get_mut(*key))?;
    match kind {
        Kind::Routing => Some(c),
        Kind::Group => c.get_mut(name),
        _ => c.as_array_mut()?.iter_mut().find(|o| o.get("id").and_then(Value::as_str) == Some(name)),
    }
}

/// Every object of a kind, by name (a client token given as a bare string has
/// no name and is not listed).
pub fn objects(root: &Value, kind: Kind) -> Vec<(String, &Value)> {
    let Some(c) = container(root, kind) else { return Vec::new() };
    match kind {
        Kind::Routing => vec![(String::new(), c)],
        Kind::Group => c.as_object().map(|m| m.iter().map(|(k, v)| (k.clone(), v)).collect()).unwrap_or_default(),
        _ => c
            .as_array()
            .map(|a| a.iter().filter_map(|o| Some((o.get("id")?.as_str()?.to_string(), o))).collect::<Vec<_>>())
            .unwrap_or_default(),
    }
}

fn set_object(root: &mut Value, kind: Kind, name: &str, value: Option<Value>) {
    let path = kind.path();
    let mut at = root;
    for (i, key) in path.iter().enumerate() {
        if !at.is_object() {
            *at = Value::Object(Map::new());
        }
        let last = i + 1 == path.len();
        let Some(fields) = at.as_object_mut() else { return };
        let empty = match (last, kind) {
            (true, Kind::Channel | Kind::Token | Kind::Budget) => Value::Array(Vec::new()),
            _ => Value::Object(Map::new()),
        };
        at = fields.entry(key.to_string()).or_insert(empty);
        if at.is_null() {
            *at = Value::Object(Map::new());
        }
    }
    match kind {
        Kind::Routing => *at = value.unwrap_or(Value::Object(Map::new())),
        Kind::Group => {
            if let Some(groups) = at.as_object_mut() {
                match value {
                    Some(v) => {
                        groups.insert(name.to_string(), v);
                    }
                    None => {
                        groups.remove(name);
                    }
                }
            }
        }
        _ => {
            if !at.is_array() {
                *at = Value::Array(Vec::new());
            }
            let Some(list) = at.as_array_mut() else { return };
            let pos = list.iter().position(|o| o.get("id").and_then(Value::as_str) == Some(name));
            match (pos, value) {
                (Some(i), Some(v)) => list[i] = v,
                (Some(i), None) => {
                    list.remove(i);
                }
                (None, Some(v)) => list.push(v),
                (None, None) => {}
            }
        }
    }
}

/// RFC 7396: `patch`'s fields replace `target`'s, objects merge, null removes.
pub fn merge_patch(target: Value, patch: &Value) -> Value {
    let Value::Object(p) = patch else { return patch.clone() };
    let mut t = match target {
        Value::Object(t) => t,
        _ => Map::new(),
    };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            let old = t.remove(k).unwrap_or(Value::Null);
            t.insert(k.clone(), merge_patch(old, v));
        }
    }
    Value::Object(t)
}

/// One patch doing what `first` then `second` do (a null in `second` stays a
/// removal).
fn compose_patches(first: Value, second: Value) -> Value {
    match (first, second) {
        (Value::Object(mut a), Value::Object(b)) => {
            for (k, v) in b {
                let merged = match (a.remove(&k), v) {
                    (Some(old @ Value::Object(_)), new @ Value::Object(_)) => compose_patches(old, new),
                    (_, new) => new,
                };
                a.insert(k, merged);
            }
            Value::Object(a)
        }
        (_, second) => second,
    }
}

/// What the API shows of a key: `${ENV}` references as they are (they are not
/// secret), a literal key as `<its id>`.
fn mask_key(key: &str, id: &str) -> String {
    if key.starts_with("${") && key.ends_with('}') {
        key.to_string()
    } else {
        format!("<{id}>")
    }
}

/// An object as the API shows it: keys and tokens masked.
pub fn masked(kind: Kind, object: &Value) -> Value {
    let mut out = object.clone();
    match kind {
        Kind::Channel => {
            if let Some(key) = out.get_mut("api_key") {
                if let Some(k) = key.as_str().filter(|k| !k.is_empty()) {
                    *key = Value::String(mask_key(k, &crate::config::key_id(k)));
                }
            }
            if let Some(keys) = out.get_mut("api_keys").and_then(Value::as_array_mut) {
                for key in keys {
                    match key {
                        Value::String(k) => *key = Value::String(mask_key(k, &crate::config::key_id(k))),
                        Value::Object(named) => {
                            let id = named.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
                            if let Some(Value::String(k)) = named.get_mut("key") {
                                *k = mask_key(k, &id);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        Kind::Token => {
            if let Some(t) = out.get_mut("token") {
                if t.as_str().is_some_and(|t| !t.is_empty()) {
                    *t = Value::String("<hidden>".into());
                }
            }
        }
        _ => {}
    }
    out
}

/// A doc (or patch) from the API with the placeholders [`masked`] shows put
/// back to the secrets of `before` (the object as it was) they stand for.
pub fn unmask(kind: Kind, doc: &mut Value, before: Option<&Value>) -> Result<(), ChangeError> {
    match kind {
        Kind::Channel => unmask_keys(doc, before),
        Kind::Token => {
            if doc.get("token").and_then(Value::as_str) == Some("<hidden>") {
                match before.and_then(|b| b.get("token")) {
                    Some(t) => doc["token"] = t.clone(),
                    None => return Err(ChangeError::Invalid("\"<hidden>\" stands for no token here".into())),
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The effective configuration and which objects the admin API changed.
#[derive(Debug, Clone, Default)]
pub struct Effective {
    pub value: Value,
    pub changes: BTreeMap<(Kind, String), Op>,
}

impl Effective {
    pub fn new(value: Value, overlays: &Overlays) -> Self {
        Self { value, changes: overlays.iter().map(|(k, c)| (k.clone(), c.op)).collect() }
    }

    /// Where an object's settings come from: `file`, `api` (made or replaced
    /// through the API) or `file+api` (the file's, patched through the API).
    pub fn source(&self, kind: Kind, name: &str) -> &'static str {
        match self.changes.get(&(kind, name.to_string())) {
            None | Some(Op::Delete) => "file",
            Some(Op::Replace) => "api",
            Some(Op::Patch) => "file+api",
        }
    }
}

/// A channel doc (or patch) from the API with `<key id>` placeholders put back
/// to the keys of `before` (the channel as it was) they stand for.
fn unmask_keys(doc: &mut Value, before: Option<&Value>) -> Result<(), ChangeError> {
    let mut known: Vec<(String, Value)> = Vec::new();
    if let Some(b) = before {
        if let Some(k) = b.get("api_key").and_then(Value::as_str).filter(|k| !k.is_empty()) {
            known.push((mask_key(k, &crate::config::key_id(k)), Value::String(k.into())));
        }
        for key in b.get("api_keys").and_then(Value::as_array).into_iter().flatten() {
            match key {
                Value::String(k) => known.push((mask_key(k, &crate::config::key_id(k)), key.clone())),
                Value::Object(named) => {
                    let id = named.get("id").and_then(Value::as_str).unwrap_or_default();
                    if let Some(k) = named.get("key").and_then(Value::as_str) {
                        known.push((mask_key(k, id), Value::String(k.into())));
                    }
                }
                _ => {}
            }
        }
    }
    let resolve = |v: &mut Value| -> Result<(), ChangeError> {
        let Some(s) = v.as_str() else { return Ok(()) };
        if !(s.starts_with('<') && s.ends_with('>')) {
            return Ok(());
        }
        match known.iter().find(|(m, _)| m == s) {
            Some((_, key)) => {
                *v = key.clone();
                Ok(())
            }
            None => Err(ChangeError::Invalid(format!(
                "{s} stands for a key this channel does not have; send the key itself"
            ))),
        }
    };
    if let Some(k) = doc.get_mut("api_key") {
        resolve(k)?;
    }
    if let Some(keys) = doc.get_mut("api_keys").and_then(Value::as_array_mut) {
        for key in keys {
            match key {
                Value::Object(named) => {
                    if let Some(k) = named.get_mut("key") {
                        resolve(k)?;
                    }
                }
                other => resolve(other)?,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn file() -> Value {
        file_value(
            "channels:\n  - id: a\n    base_url: http://a/v1\n    api_key: ${KEY_A}\n    priority: 1\n\
             model_groups:\n  fast:\n    query: tag:fast\nrouting:\n  default_strategy: cost_first\n",
        )
        .unwrap()
    }

    fn change(ov: &mut Overlays, kind: Kind, name: &str, ask: Ask) -> Result<(), ChangeError> {
        match apply_ask(&file(), ov, kind, name, ask)? {
            Some(c) => ov.insert((kind, name.to_string()), c),
            None => ov.remove(&(kind, name.to_string())),
        };
        Ok(())
    }

    #[test]
    fn a_patch_keeps_following_the_file_for_fields_it_leaves_alone() {
        let mut ov = Overlays::new();
        change(&mut ov, Kind::Channel, "a", Ask::Patch(json!({"enabled": false}))).unwrap();
        let mut f = file();
        f["channels"][0]["priority"] = json!(5);
        let eff = effective(&f, &ov);
        assert_eq!(eff["channels"][0]["priority"], 5, "a file edit still applies");
        assert_eq!(eff["channels"][0]["enabled"], false);
        change(&mut ov, Kind::Channel, "a", Ask::Patch(json!({"tags": ["x"]}))).unwrap();
        assert_eq!(ov[&(Kind::Channel, "a".into())].doc, json!({"enabled": false, "tags": ["x"]}));
    }

    #[test]
    fn create_replace_delete_and_their_errors() {
        let mut ov = Overlays::new();
        assert_eq!(
            change(&mut ov, Kind::Channel, "a", Ask::Create(json!({"base_url": "http://x"}))),
            Err(ChangeError::Exists("channel", "a".into()))
        );
        assert_eq!(
            change(&mut ov, Kind::Channel, "b", Ask::Patch(json!({}))),
            Err(ChangeError::NotFound("channel", "b".into()))
        );
        change(&mut ov, Kind::Channel, "b", Ask::Create(json!({"base_url": "http://b/v1"}))).unwrap();
        let eff = effective(&file(), &ov);
        assert_eq!(eff["channels"][1], json!({"id": "b", "base_url": "http://b/v1"}));
        change(&mut ov, Kind::Channel, "a", Ask::Delete).unwrap();
        change(&mut ov, Kind::Group, "fast", Ask::Replace(json!({"query": "tag:quick"}))).unwrap();
        change(&mut ov, Kind::Group, "new", Ask::Create(json!({"query": "m1"}))).unwrap();
        change(&mut ov, Kind::Routing, "", Ask::Patch(json!({"default_strategy": "speed_optimized"}))).unwrap();
        change(&mut ov, Kind::Token, "t1", Ask::Create(json!({"sha256": "ab"}))).unwrap();
        let eff = effective(&file(), &ov);
        assert_eq!(eff["channels"], json!([{"id": "b", "base_url": "http://b/v1"}]));
        assert_eq!(eff["model_groups"], json!({"fast": {"query": "tag:quick"}, "new": {"query": "m1"}}));
        assert_eq!(eff["routing"]["default_strategy"], "speed_optimized");
        assert_eq!(eff["auth"]["api_tokens"], json!([{"id": "t1", "sha256": "ab"}]));
        assert!(matches!(
            change(&mut ov, Kind::Channel, "b", Ask::Patch(json!({"id": "c"}))),
            Err(ChangeError::Invalid(_))
        ));
        // Loading the effective config again with the same changes changes nothing.
        assert_eq!(effective(&eff, &ov), eff);
        // An object made through the API leaves no trace once deleted.
        change(&mut ov, Kind::Group, "new", Ask::Delete).unwrap();
        assert!(!ov.contains_key(&(Kind::Group, "new".into())));
        assert_eq!(ov[&(Kind::Channel, "a".into())].op, Op::Delete, "the file's channel stays hidden");
        change(&mut ov, Kind::Routing, "", Ask::Delete).unwrap();
        assert_eq!(effective(&file(), &ov)["routing"]["default_strategy"], "cost_first");
    }

    #[test]
    fn keys_are_masked_and_placeholders_put_back() {
        let ch = json!({"id": "a", "api_key": "sk-live-1", "api_keys": ["${K2}", {"id": "k3", "key": "sk-3"}]});
        let shown = masked(Kind::Channel, &ch);
        let id1 = crate::config::key_id("sk-live-1");
        assert_eq!(shown["api_key"], format!("<{id1}>"));
        assert_eq!(shown["api_keys"], json!(["${K2}", {"id": "k3", "key": "<k3>"}]));
        assert!(!shown.to_string().contains("sk-"));
        let mut back = shown.clone();
        unmask_keys(&mut back, Some(&ch)).unwrap();
        assert_eq!(back, ch);
        let mut bad = json!({"api_key": "<key-00000000>"});
        assert!(unmask_keys(&mut bad, Some(&ch)).is_err());
        assert_eq!(masked(Kind::Token, &json!({"id": "t", "token": "x"}))["token"], "<hidden>");
    }
}
