//! vigil-host (placeholder until the daemon lands).
