//! `GET|PATCH|DELETE /admin/v1/routing`: the routing settings in force (a
//! patch is laid over the file's `routing`; `DELETE` drops the API's changes,
//! back to the file). `GET /admin/v1/config`: the whole effective
//! configuration, keys masked, with the list of changes made through the API.

use axum::extract::State;
use axum::response::Response;
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::auth::Actor;
use super::error::JsonBody;
use super::objects::{self, MAX_OBJECT_BYTES};
use super::{ApiError, State as ApiState};
use crate::admin::{self, Kind};

pub async fn get_routing(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    objects::one(&state, Kind::Routing, "")
}

pub async fn patch_routing(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    JsonBody(doc): JsonBody<Value, MAX_OBJECT_BYTES>,
) -> Result<Response, ApiError> {
    objects::patch(&state, Kind::Routing, "", &actor, doc).await
}

pub async fn reset_routing(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
) -> Result<Response, ApiError> {
    objects::delete(&state, Kind::Routing, "", &actor).await?;
    objects::one(&state, Kind::Routing, "").map(axum::response::IntoResponse::into_response)
}

pub async fn config(State(state): State<ApiState>) -> Json<Value> {
    let effective = state.effective.borrow().clone();
    let mut value = effective.value.clone();
    for kind in [Kind::Channel, Kind::Token] {
        let names: Vec<String> = admin::objects(&value, kind).into_iter().map(|(n, _)| n).collect();
        for name in names {
            if let Some(o) = admin::object_mut(&mut value, kind, &name) {
                *o = admin::masked(kind, o);
            }
        }
    }
    let changes: Vec<Value> = effective
        .changes
        .iter()
        .map(|((kind, name), op)| json!({"kind": kind.as_str(), "name": name, "op": op.as_str()}))
        .collect();
    Json(json!({"config": value, "changes": changes}))
}
