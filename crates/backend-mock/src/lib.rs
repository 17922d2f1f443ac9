//! Test doubles for netcore (filled in below).
