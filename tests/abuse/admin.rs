//! The admin API's authentication and cross-site checks, WebSocket origins.
