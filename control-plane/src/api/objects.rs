//! Create, read, replace, patch and delete the objects of the configuration
//! (channels, model groups, client tokens, budgets, routing settings). Each
//! write goes to the serve loop, which checks that the configuration with it
//! still loads and builds a table, stores it with its audit entry, and puts it
//! in force (Envoy has it within about a second). See `crate::admin` for how
//! such changes combine with the YAML file.
//!
//! Reads show the effective object with its keys masked and where its settings
//! come from (`source`: `file`, `api` or `file+api`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::auth::Actor;
use super::error::JsonBody;
use super::{ApiError, Command, State as ApiState};
use crate::admin::{self, Ask, ChangeError, Kind};

/// The most an object's JSON may weigh.
pub const MAX_OBJECT_BYTES: usize = 1024 * 1024;
type Body = JsonBody<Value, MAX_OBJECT_BYTES>;

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        let message = e.to_string();
        match e {
            ChangeError::NotFound(..) => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
            ChangeError::Exists(..) => ApiError::new(StatusCode::CONFLICT, "already_exists", message),
            ChangeError::Invalid(_) => ApiError::bad_request("invalid_object", message),
            ChangeError::Config(_) => ApiError::bad_request("invalid_config", message),
            ChangeError::Store(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", message),
        }
    }
}

/// Hand one change to the serve loop and wait for its answer.
pub async fn send(
    state: &ApiState,
    kind: Kind,
    name: &str,
    ask: Ask,
    actor: &Actor,
) -> Result<Option<Value>, ApiError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let command = Command::Change { kind, name: name.to_string(), ask, actor: actor.id.clone(), reply };
    state.commands.send(command).map_err(|_| ApiError::stopping())?;
    Ok(answer.await.map_err(|_| ApiError::stopping())??)
}

fn shown(state: &ApiState, kind: Kind, name: &str, object: &Value) -> Value {
    let mut out = admin::masked(kind, object);
    if let Some(fields) = out.as_object_mut() {
        if kind == Kind::Group {
            fields.insert("name".into(), Value::String(name.into()));
        }
        fields.insert("source".into(), Value::from(state.effective.borrow().source(kind, name)));
    }
    out
}

pub fn list(state: &ApiState, kind: Kind) -> Json<Value> {
    let effective = state.effective.borrow().clone();
    let data: Vec<Value> =
        admin::objects(&effective.value, kind).into_iter().map(|(name, o)| shown(state, kind, &name, o)).collect();
    Json(json!({ "object": "list", "data": data }))
}

pub fn one(state: &ApiState, kind: Kind, name: &str) -> Result<Json<Value>, ApiError> {
    let effective = state.effective.borrow().clone();
    match admin::object(&effective.value, kind, name) {
        Some(o) => Ok(Json(shown(state, kind, name, o))),
        None => Err(ChangeError::NotFound(kind.as_str(), name.to_string()).into()),
    }
}

/// The new object's name: its `id` (a group's `name`, taken out of the doc).
fn name_of(kind: Kind, doc: &mut Value) -> Result<String, ApiError> {
    let field = if kind == Kind::Group { "name" } else { "id" };
    let name = match doc.get(field) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(ApiError::bad_request("invalid_object", format!("a {} needs a \"{field}\"", kind.as_str()))),
    };
    if kind == Kind::Group {
        if let Some(fields) = doc.as_object_mut() {
            fields.remove("name");
        }
    }
    Ok(name)
}

fn done(state: &ApiState, kind: Kind, name: &str, after: Option<Value>, status: StatusCode) -> Response {
    match after {
        Some(mut a) => {
            if let Some(fields) = a.as_object_mut() {
                if kind == Kind::Group {
                    fields.insert("name".into(), Value::String(name.into()));
                }
                fields.insert("source".into(), Value::from(state.effective.borrow().source(kind, name)));
            }
            (status, Json(a)).into_response()
        }
        None => (StatusCode::OK, Json(json!({"id": name, "deleted": true}))).into_response(),
    }
}

/// A doc as a write takes it: without what reads add (`source`, a group's
/// `name`), so an object read can be sent back as it is.
fn settings_only(kind: Kind, mut doc: Value) -> Value {
    if let Some(fields) = doc.as_object_mut() {
        fields.remove("source");
        if kind == Kind::Group {
            fields.remove("name");
        }
    }
    doc
}

pub async fn create(state: &ApiState, kind: Kind, actor: &Actor, mut doc: Value) -> Result<Response, ApiError> {
    let name = name_of(kind, &mut doc)?;
    let doc = settings_only(kind, doc);
    let after = send(state, kind, &name, Ask::Create(doc), actor).await?;
    Ok(done(state, kind, &name, after, StatusCode::CREATED))
}

pub async fn replace(
    state: &ApiState,
    kind: Kind,
    name: &str,
    actor: &Actor,
    doc: Value,
) -> Result<Response, ApiError> {
    let after = send(state, kind, name, Ask::Replace(settings_only(kind, doc)), actor).await?;
    Ok(done(state, kind, name, after, StatusCode::OK))
}

pub async fn patch(state: &ApiState, kind: Kind, name: &str, actor: &Actor, doc: Value) -> Result<Response, ApiError> {
    let after = send(state, kind, name, Ask::Patch(settings_only(kind, doc)), actor).await?;
    Ok(done(state, kind, name, after, StatusCode::OK))
}

pub async fn delete(state: &ApiState, kind: Kind, name: &str, actor: &Actor) -> Result<Response, ApiError> {
    let after = send(state, kind, name, Ask::Delete, actor).await?;
    Ok(done(state, kind, name, after, StatusCode::OK))
}

/// `GET base`: every object of `kind`.
pub fn list_route(kind: Kind) -> MethodRouter<ApiState> {
    get(move |State(s): State<ApiState>| async move { list(&s, kind) })
}

/// `POST base`: a new object of `kind`.
pub fn create_route(kind: Kind) -> MethodRouter<ApiState> {
    post(move |State(s): State<ApiState>, Extension(a): Extension<Actor>, JsonBody(doc): Body| async move {
        create(&s, kind, &a, doc).await
    })
}

/// `GET|PUT|PATCH|DELETE base/{name}` for one kind of named object.
pub fn item_routes(kind: Kind, base: &str) -> axum::Router<ApiState> {
    let item = format!("{base}/{{name}}");
    axum::Router::new().route(
        &item,
        get(move |State(s): State<ApiState>, Path(name): Path<String>| async move { one(&s, kind, &name) })
            .put(
                move |State(s): State<ApiState>,
                      Path(name): Path<String>,
                      Extension(a): Extension<Actor>,
                      JsonBody(doc): Body| async move { replace(&s, kind, &name, &a, doc).await },
            )
            .patch(
                move |State(s): State<ApiState>,
                      Path(name): Path<String>,
                      Extension(a): Extension<Actor>,
                      JsonBody(doc): Body| async move { patch(&s, kind, &name, &a, doc).await },
            )
            .delete(
                move |State(s): State<ApiState>, Path(name): Path<String>, Extension(a): Extension<Actor>| async move {
                    delete(&s, kind, &name, &a).await
                },
            ),
    )
}
