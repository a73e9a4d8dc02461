//! Python values ↔ MessagePack (the `any` fields of SPEC §4.2: `args`, `result`, `body`,
//! `meta`, `input_schema`, `annotations`).
//!
//! The core carries these values as opaque, already validated MessagePack ([`RawValue`]);
//! this module only converts them to and from Python objects. A value the peer sent that
//! cannot become a Python object (a map keyed by a map, an ext type, nesting beyond
//! [`MAX_DEPTH`]) is handed out as [`Raw`] instead of failing: bad peer input never raises.

use asp_proto::{Bytes, RawValue};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
};
use pyo3::IntoPyObjectExt;

/// Deepest nesting converted either way (the core bounds a frame's size, not its depth;
/// recursion on a hostile value must not exhaust the stack).
pub const MAX_DEPTH: usize = 256;

/// An encoded MessagePack value, passed through verbatim: give one as `args`/`result`/`body`
/// to send exact bytes, and receive one where a value has no Python form (or on a
/// connection made with `raw_values=True`).
#[pyclass(module = "agentsocket._core", frozen, eq, hash)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Raw {
    bytes: Vec<u8>,
}

#[pymethods]
impl Raw {
    /// Wraps the bytes of exactly one MessagePack value (checked).
    #[new]
    fn py_new(data: &[u8]) -> PyResult<Raw> {
        RawValue::new(Bytes::copy_from_slice(data))
            .map_err(|e| PyValueError::new_err(format!("not one MessagePack value: {e:?}")))?;
        Ok(Raw {
            bytes: data.to_vec(),
        })
    }

    /// The encoded bytes.
    #[getter]
    fn data<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.bytes)
    }

    /// The value as a Python object (raises ValueError if it has no Python form).
    fn decode(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let mut at = 0;
        decode_value(py, &self.bytes, &mut at, 0).map_err(PyValueError::new_err)
    }

    fn __repr__(&self) -> String {
        let hex: Vec<String> = self.bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("Raw('{}')", hex.join(" "))
    }

    fn __bytes__(&self) -> Vec<u8> {
        self.bytes.clone()
    }
}

/// Encodes a Python object as one MessagePack value.
pub fn encode(obj: &Bound<'_, PyAny>) -> PyResult<RawValue> {
    let mut out = Vec::with_capacity(64);
    encode_into(obj, &mut out, 0)?;
    RawValue::new(Bytes::from(out)).map_err(|e| PyValueError::new_err(format!("{e:?}")))
}

/// `None` → absent; anything else encoded.
pub fn encode_opt(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<RawValue>> {
    match obj {
        None => Ok(None),
        Some(o) if o.is_none() => Ok(None),
        Some(o) => encode(o).map(Some),
    }
}

fn encode_into(obj: &Bound<'_, PyAny>, out: &mut Vec<u8>, depth: usize) -> PyResult<()> {
    use rmp::encode as w;
    if depth > MAX_DEPTH {
        return Err(PyValueError::new_err("value nested too deeply"));
    }
    // `Vec<u8>` writes cannot fail; the results are ignored through `ok()`.
    if obj.is_none() {
        w::write_nil(out).ok();
    } else if let Ok(b) = obj.cast::<PyBool>() {
        w::write_bool(out, b.is_true()).ok();
    } else if let Ok(s) = obj.cast::<PyString>() {
        let s = s.to_str()?;
        w::write_str(out, s).ok();
    } else if let Ok(i) = obj.cast::<PyInt>() {
        if let Ok(v) = i.extract::<u64>() {
            w::write_uint(out, v).ok();
        } else if let Ok(v) = i.extract::<i64>() {
            w::write_sint(out, v).ok();
        } else {
            return Err(PyValueError::new_err("integer out of MessagePack range"));
        }
    } else if let Ok(f) = obj.cast::<PyFloat>() {
        w::write_f64(out, f.value()).ok();
    } else if let Ok(b) = obj.cast::<PyBytes>() {
        w::write_bin(out, b.as_bytes()).ok();
    } else if let Ok(b) = obj.cast::<PyByteArray>() {
        w::write_bin(out, &b.to_vec()).ok();
    } else if let Ok(d) = obj.cast::<PyDict>() {
        w::write_map_len(out, len32(d.len())?).ok();
        for (k, v) in d.iter() {
            encode_into(&k, out, depth + 1)?;
            encode_into(&v, out, depth + 1)?;
        }
    } else if let Ok(l) = obj.cast::<PyList>() {
        w::write_array_len(out, len32(l.len())?).ok();
        for v in l.iter() {
            encode_into(&v, out, depth + 1)?;
        }
    } else if let Ok(t) = obj.cast::<PyTuple>() {
        w::write_array_len(out, len32(t.len())?).ok();
        for v in t.iter() {
            encode_into(&v, out, depth + 1)?;
        }
    } else if let Ok(r) = obj.cast::<Raw>() {
        out.extend_from_slice(&r.get().bytes);
    } else {
        return Err(PyTypeError::new_err(format!(
            "cannot send a {} as MessagePack (use dict, list, str, bytes, int, float, bool, None)",
            obj.get_type().name()?
        )));
    }
    Ok(())
}

fn len32(n: usize) -> PyResult<u32> {
    u32::try_from(n).map_err(|_| PyValueError::new_err("container too large"))
}

/// Decodes a value the core already validated as one well-formed MessagePack value. When it
/// has no Python form it becomes a [`Raw`].
pub fn decode(py: Python<'_>, v: &RawValue, raw: bool) -> PyResult<Py<PyAny>> {
    let b = v.as_bytes();
    if !raw {
        let mut at = 0;
        if let Ok(o) = decode_value(py, b, &mut at, 0) {
            if at == b.len() {
                return Ok(o);
            }
        }
    }
    Ok(Py::new(py, Raw { bytes: b.to_vec() })?.into_any())
}

/// `None` for an absent value.
pub fn decode_opt(py: Python<'_>, v: Option<&RawValue>, raw: bool) -> PyResult<Py<PyAny>> {
    match v {
        None => Ok(py.None()),
        Some(v) => decode(py, v, raw),
    }
}

/// Decodes any MessagePack bytes given by Python (`unpackb`), checking everything.
pub fn decode_bytes(py: Python<'_>, b: &[u8]) -> PyResult<Py<PyAny>> {
    let mut at = 0;
    let o = decode_value(py, b, &mut at, 0).map_err(PyValueError::new_err)?;
    if at != b.len() {
        return Err(PyValueError::new_err("trailing bytes after the value"));
    }
    Ok(o)
}

fn take<'a>(b: &'a [u8], at: &mut usize, n: usize) -> Result<&'a [u8], String> {
    let end = at.checked_add(n).ok_or("length overflow")?;
    let s = b.get(*at..end).ok_or("truncated value")?;
    *at = end;
    Ok(s)
}

fn be(b: &[u8], at: &mut usize, n: usize) -> Result<u64, String> {
    Ok(take(b, at, n)?
        .iter()
        .fold(0u64, |acc, x| (acc << 8) | u64::from(*x)))
}

fn decode_value(
    py: Python<'_>,
    b: &[u8],
    at: &mut usize,
    depth: usize,
) -> Result<Py<PyAny>, String> {
    if depth > MAX_DEPTH {
        return Err("value nested too deeply".into());
    }
    let m = *take(b, at, 1)?.first().ok_or("truncated value")?;
    let err = |e: PyErr| e.to_string();
    let obj: Py<PyAny> = match m {
        0x00..=0x7f => u64::from(m).into_py_any(py).map_err(err)?,
        0xe0..=0xff => i64::from(m as i8).into_py_any(py).map_err(err)?,
        0xc0 => py.None(),
        0xc2 => PyBool::new(py, false).to_owned().into_any().unbind(),
        0xc3 => PyBool::new(py, true).to_owned().into_any().unbind(),
        0xcc..=0xcf => {
            let n = 1usize << (m - 0xcc);
            be(b, at, n)?.into_py_any(py).map_err(err)?
        }
        0xd0..=0xd3 => {
            let n = 1usize << (m - 0xd0);
            let v = be(b, at, n)?;
            let shift = 64 - 8 * n as u32;
            let v = ((v << shift) as i64) >> shift;
            v.into_py_any(py).map_err(err)?
        }
        0xca => {
            let v = f32::from_bits(be(b, at, 4)? as u32);
            PyFloat::new(py, f64::from(v)).into_any().unbind()
        }
        0xcb => PyFloat::new(py, f64::from_bits(be(b, at, 8)?))
            .into_any()
            .unbind(),
        0xa0..=0xbf | 0xd9..=0xdb => {
            let n = match m {
                0xd9 => be(b, at, 1)?,
                0xda => be(b, at, 2)?,
                0xdb => be(b, at, 4)?,
                _ => u64::from(m & 0x1f),
            };
            let s = take(b, at, usize::try_from(n).map_err(|_| "length")?)?;
            // SPEC §4.3: strings inside `any` are not checked for UTF-8; such a string
            // arrives as bytes.
            match std::str::from_utf8(s) {
                Ok(s) => PyString::new(py, s).into_any().unbind(),
                Err(_) => PyBytes::new(py, s).into_any().unbind(),
            }
        }
        0xc4..=0xc6 => {
            let n = be(b, at, 1usize << (m - 0xc4))?;
            let s = take(b, at, usize::try_from(n).map_err(|_| "length")?)?;
            PyBytes::new(py, s).into_any().unbind()
        }
        0x90..=0x9f | 0xdc | 0xdd => {
            let n = match m {
                0xdc => be(b, at, 2)?,
                0xdd => be(b, at, 4)?,
                _ => u64::from(m & 0x0f),
            };
            // Each element takes at least one byte: a declared count beyond what remains
            // is refused before anything is allocated.
            if n > (b.len() - *at) as u64 {
                return Err("truncated array".into());
            }
            let list = PyList::empty(py);
            for _ in 0..n {
                list.append(decode_value(py, b, at, depth + 1)?)
                    .map_err(err)?;
            }
            list.into_any().unbind()
        }
        0x80..=0x8f | 0xde | 0xdf => {
            let n = match m {
                0xde => be(b, at, 2)?,
                0xdf => be(b, at, 4)?,
                _ => u64::from(m & 0x0f),
            };
            if n.saturating_mul(2) > (b.len() - *at) as u64 {
                return Err("truncated map".into());
            }
            let d = PyDict::new(py);
            for _ in 0..n {
                let k = decode_value(py, b, at, depth + 1)?;
                let k = hashable(py, k);
                let v = decode_value(py, b, at, depth + 1)?;
                d.set_item(k, v).map_err(err)?;
            }
            d.into_any().unbind()
        }
        _ => return Err(format!("MessagePack type 0x{m:02x} has no Python form")),
    };
    Ok(obj)
}

/// A list used as a map key becomes a tuple (lists are not hashable); other unhashable keys
/// make `set_item` fail, and the whole value is then handed out as [`Raw`].
fn hashable(py: Python<'_>, k: Py<PyAny>) -> Py<PyAny> {
    let b = k.bind(py);
    if let Ok(l) = b.cast::<PyList>() {
        if let Ok(t) = PyTuple::new(py, l.iter()) {
            return t.into_any().unbind();
        }
    }
    k
}
