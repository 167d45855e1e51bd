//! The library half of zoo-cli: what other crates call without running the program.
//! Today that is [`api`], the OpenAI request bodies `zoo serve` accepts and their
//! validation, so that the fuzz targets of zoo-tests feed bytes through the very code
//! the server runs.

pub mod api;
