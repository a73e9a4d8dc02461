//! `asp-relay` (placeholder while the relay is being written).
fn main() {}
