//! The personas crate's integration tests, one binary: parsing persona files
//! and the catalog, and resolution and access rules against PostgreSQL.

mod db;
mod parse;
