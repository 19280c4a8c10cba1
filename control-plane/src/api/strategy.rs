//! `GET|PUT /admin/v1/strategy` `{"strategy": "speed_optimized"}`: the routing
//! strategy in force; a change reaches Envoy with the next table, no restart,
//! and is kept in the store as a change to the routing settings (audited).

use axum::extract::State;
use axum::{Extension, Json};

use super::auth::Actor;
use super::error::JsonBody;
use super::{ApiError, Command, State as ApiState};

#[derive(serde::Deserialize, serde::Serialize)]
pub struct Strategy {
    strategy: String,
}

pub async fn get(State(state): State<ApiState>) -> Json<Strategy> {
    let strategy = state.table.borrow().as_ref().map(|p| p.table.routing.default_strategy.clone()).unwrap_or_default();
    Json(Strategy { strategy })
}

pub async fn put(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    JsonBody(ask): JsonBody<Strategy, { 64 * 1024 }>,
) -> Result<Json<Strategy>, ApiError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    state
        .commands
        .send(Command::SetStrategy { name: ask.strategy.clone(), actor: actor.id, reply })
        .map_err(|_| ApiError::stopping())?;
    match answer.await {
        Ok(Ok(())) => Ok(Json(ask)),
        Ok(Err(why)) => Err(ApiError::bad_request("unknown_strategy", why)),
        Err(_) => Err(ApiError::stopping()),
    }
}
