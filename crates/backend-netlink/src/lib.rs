//! LinkOps over rtnetlink (filled in by issue 3).
