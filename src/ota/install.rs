//! The install flow, health check and rollback.
