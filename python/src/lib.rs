//! `agentsocket._core`: the Agent Socket Protocol Sans-IO core (`asp-proto`) for Python.
//!
//! The protocol is decided here, by the same Rust state machine the Rust adapters drive; the
//! pure-Python package `agentsocket` only moves bytes (asyncio + `websockets`), runs the one
//! timer the core asks for and offers the API. See `agentsocket/_core.pyi` for the types.
#![forbid(unsafe_code)]

mod config;
mod connection;
mod event;
mod frames;
mod value;

use asp_proto::ErrorCode;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

create_exception!(
    _core,
    LocalError,
    PyException,
    "A command the SPEC forbids now (local misuse, never the peer's fault): args (kind, message)."
);

/// Encodes a Python value as MessagePack bytes.
#[pyfunction]
fn packb<'py>(py: Python<'py>, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let v = value::encode(obj)?;
    Ok(PyBytes::new(py, v.as_bytes()))
}

/// Decodes MessagePack bytes (exactly one value) to a Python value.
#[pyfunction]
fn unpackb(py: Python<'_>, data: &[u8]) -> PyResult<Py<PyAny>> {
    value::decode_bytes(py, data)
}

/// The SPEC §12.2 name of a code (`"UNKNOWN_TOOL"`), or None.
#[pyfunction]
fn error_name(code: u16) -> Option<&'static str> {
    ErrorCode(code).name()
}

/// Whether the SPEC §12.2 registry marks a code retryable.
#[pyfunction]
fn error_retryable(code: u16) -> bool {
    ErrorCode(code).default_retryable()
}

/// SPEC §12.1 scope: `connection`, `frame`, `exchange`, `application` or `invalid`.
#[pyfunction]
fn error_scope(code: u16) -> &'static str {
    event::scope_name(ErrorCode(code))
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<connection::Connection>()?;
    m.add_class::<value::Raw>()?;
    m.add("LocalError", py.get_type::<LocalError>())?;
    m.add_function(wrap_pyfunction!(packb, m)?)?;
    m.add_function(wrap_pyfunction!(unpackb, m)?)?;
    m.add_function(wrap_pyfunction!(error_name, m)?)?;
    m.add_function(wrap_pyfunction!(error_retryable, m)?)?;
    m.add_function(wrap_pyfunction!(error_scope, m)?)?;
    m.add_function(wrap_pyfunction!(frames::decode_frames, m)?)?;
    let codes = PyDict::new(py);
    for c in ErrorCode::ALL {
        if let Some(n) = c.name() {
            codes.set_item(n, c.0)?;
        }
    }
    m.add("ERROR_CODES", codes)?;
    m.add("CONFIG_KEYS", config::KEYS.to_vec())?;
    Ok(())
}
