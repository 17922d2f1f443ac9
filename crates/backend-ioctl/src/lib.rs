//! LinkOps over ioctls (filled in by issue 3).
