//! Integration tests: the real `gse-agent` binary supervising `gse-fake-server`.

mod cases;
mod helper;
