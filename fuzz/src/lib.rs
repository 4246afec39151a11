//! Support for the fuzz targets: the properties they check are the ones the randomized tests of
//! the main crate check, from one file.
#[path = "../../tests/props/mod.rs"]
pub mod props;
