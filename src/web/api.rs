//! The axum router for the local web page (docs/web-api.md).
