//! The test kit's own tests, one binary: the migrated schema against the
//! seed document, and the records' JSON and row mappings.

mod records_json;
mod schema;
