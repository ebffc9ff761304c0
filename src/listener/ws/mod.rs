//! WebSocket listeners, for any protocol: [`WsFramed`] carries a codec's frames over a
//! WebSocket, [`serve`] runs a protocol's [`Endpoint`] (the upgrade path and what serves
//! an upgraded connection).

mod endpoint;
mod framed;

pub use endpoint::{Endpoint, app, serve};
pub use framed::WsFramed;
