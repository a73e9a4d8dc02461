//! `arbitrary::Arbitrary` for every frame type (feature `arbitrary`), for structured fuzzing.
//!
//! Every generated frame is *valid*: it respects the field ranges of SPEC §5 and the request
//! id rule of its type (§3.5), so `decode(encode(f)) == f`. An `any` field is never
//! `Some(nil)`, which decodes as absent (§4.2).
#![allow(
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used
)]

use arbitrary::{Arbitrary, Result, Unstructured};
use bytes::Bytes;

use crate::frame::*;
use crate::ErrorCode;

/// Names the generators prefer, so that INVOKEs meet registered tools and capabilities are
/// recognised.
pub(crate) const WORDS: &[&str] = &[
    "echo",
    "sleep",
    "fail",
    "requests",
    "resume",
    "clarify",
    "confirm",
    "x",
    "é",
    "日本語",
];

/// A string of `min..=max` UTF-8 bytes: a known word or arbitrary text, cut at a char
/// boundary and padded with `a` up to `min`.
pub(crate) fn text(u: &mut Unstructured<'_>, min: usize, max: usize) -> Result<Text> {
    let mut s = if u.ratio(1, 2)? {
        (*u.choose(WORDS)?).to_owned()
    } else {
        <&str>::arbitrary(u)?.to_owned()
    };
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    while s.len() < min {
        s.push('a');
    }
    Ok(Text::from(s))
}

pub(crate) fn opt_text(u: &mut Unstructured<'_>, min: usize, max: usize) -> Result<Option<Text>> {
    Ok(if bool::arbitrary(u)? {
        Some(text(u, min, max)?)
    } else {
        None
    })
}

/// `min..=max` arbitrary bytes.
fn bin(u: &mut Unstructured<'_>, min: usize, max: usize) -> Result<Bytes> {
    let b = <&[u8]>::arbitrary(u)?;
    let mut v = b[..b.len().min(max)].to_vec();
    v.resize(v.len().max(min), 0x5a);
    Ok(Bytes::from(v))
}

/// Fixed well-formed MessagePack values, none of them `nil`.
const RAW_VALUES: &[&[u8]] = &[
    &[0x80],                                     // {}
    &[0x90],                                     // []
    &[0xc3],                                     // true
    &[0xc2],                                     // false
    &[0xff],                                     // -1
    &[0xd0, 0x80],                               // int 8 -128
    &[0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0],       // 1.0
    &[0xca, 0x40, 0x49, 0x0f, 0xdb],             // float 32
    &[0xc4, 0x02, 0x00, 0xff],                   // bin
    &[0xd4, 0x01, 0x00],                         // fixext 1
    &[0xc7, 0x00, 0x05],                         // ext 8, empty
    &[0x81, 0xa1, 0x61, 0x01],                   // {"a": 1}
    &[0x82, 0x00, 0xc0, 0xa1, 0x62, 0x91, 0xc0], // {0: nil, "b": [nil]}
    &[0x91, 0x91, 0x91, 0x90],                   // [[[[]]]]
    &[0xa3, 0xff, 0xfe, 0xfd],                   // str with bad UTF-8: opaque, allowed
    &[0xdc, 0x00, 0x01, 0x01],                   // array 16 of one
    &[0xcf, 0, 0, 0, 0, 0, 0, 0, 1],             // non-shortest uint 64
];

fn raw_depth(u: &mut Unstructured<'_>, depth: u8) -> Result<RawValue> {
    Ok(match u.int_in_range(0u8..=6)? {
        0 => RawValue::uint(u64::arbitrary(u)?),
        1 => RawValue::string(text(u, 0, 300)?.as_str()),
        2 | 3 => RawValue::new(Bytes::from_static(u.choose(RAW_VALUES)?))
            .unwrap_or_else(|_| RawValue::uint(0)),
        4 => {
            let b = <&[u8]>::arbitrary(u)?;
            match RawValue::new(Bytes::copy_from_slice(b)) {
                Ok(v) if b != [0xc0] => v,
                _ => RawValue::uint(u64::from(u8::arbitrary(u)?)),
            }
        }
        _ if depth < 3 => {
            // A small array or map of nested values.
            let n = u.int_in_range(0u8..=3)?;
            let map = bool::arbitrary(u)?;
            let mut b = vec![if map { 0x80 } else { 0x90 } | n];
            for _ in 0..n {
                if map {
                    b.extend_from_slice(raw_depth(u, depth + 1)?.as_bytes());
                }
                b.extend_from_slice(raw_depth(u, depth + 1)?.as_bytes());
            }
            RawValue::new(Bytes::from(b)).unwrap_or_else(|_| RawValue::uint(1))
        }
        _ => RawValue::uint(2),
    })
}

fn raw(u: &mut Unstructured<'_>) -> Result<RawValue> {
    raw_depth(u, 0)
}

pub(crate) fn opt_raw(u: &mut Unstructured<'_>) -> Result<Option<RawValue>> {
    Ok(if bool::arbitrary(u)? {
        Some(raw(u)?)
    } else {
        None
    })
}

/// Client-space id, mostly one of the first few (so frames meet exchanges in flight).
fn client_id(u: &mut Unstructured<'_>) -> Result<RequestId> {
    Ok(RequestId(if u.ratio(3, 4)? {
        u.int_in_range(1..=4)?
    } else {
        u.int_in_range(1..=0x7fff)?
    }))
}

/// Server-space id, mostly one of the first few.
fn server_id(u: &mut Unstructured<'_>) -> Result<RequestId> {
    Ok(RequestId(if u.ratio(3, 4)? {
        u.int_in_range(0x8001..=0x8004)?
    } else {
        u.int_in_range(0x8000..=0xffff)?
    }))
}

fn u32_biased(u: &mut Unstructured<'_>, min: u32) -> Result<u32> {
    Ok(match u.int_in_range(0u8..=3)? {
        0 => min,
        1 => min.saturating_add(u32::from(u8::arbitrary(u)?)),
        2 => u32::MAX,
        _ => u32::arbitrary(u)?.max(min),
    })
}

impl<'a> Arbitrary<'a> for RequestId {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        match u.int_in_range(0u8..=3)? {
            0 => client_id(u),
            1 => server_id(u),
            2 => Ok(RequestId::CONNECTION),
            _ => Ok(RequestId(u16::arbitrary(u)?)),
        }
    }
}

impl<'a> Arbitrary<'a> for Text {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        text(u, 0, usize::MAX)
    }
}

impl<'a> Arbitrary<'a> for RawValue {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        raw(u)
    }
}

impl<'a> Arbitrary<'a> for FrameType {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(*u.choose(&FrameType::ALL)?)
    }
}

impl<'a> Arbitrary<'a> for ErrorCode {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        if u.ratio(3, 4)? {
            Ok(*u.choose(ErrorCode::ALL)?)
        } else {
            Ok(ErrorCode(u16::arbitrary(u)?.max(1)))
        }
    }
}

impl<'a> Arbitrary<'a> for Versions {
    /// Non-empty; `[1]` half of the time.
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        if bool::arbitrary(u)? {
            return Ok(Versions::V1);
        }
        let bits = u16::arbitrary(u)?;
        let mut v = Versions::default();
        for n in 1..16u8 {
            if bits & (1 << n) != 0 {
                v.insert(n);
            }
        }
        if v.is_empty() {
            v.insert(1);
        }
        Ok(v)
    }
}

impl<'a> Arbitrary<'a> for HelloLimits {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let mut l = HelloLimits::default();
        if bool::arbitrary(u)? {
            l.max_frame_payload = Some(u32_biased(u, 64)?);
        }
        if bool::arbitrary(u)? {
            l.max_inflight = Some(u.int_in_range(1..=0x7fff)?);
        }
        if bool::arbitrary(u)? {
            l.max_tools = Some(u16::arbitrary(u)?);
        }
        if bool::arbitrary(u)? {
            l.max_chunk = Some(u32_biased(u, 4)?);
        }
        if bool::arbitrary(u)? {
            l.initial_window = Some(u32_biased(u, 8)?);
        }
        if bool::arbitrary(u)? {
            l.replay_buffer = Some(u32_biased(u, 0)?);
        }
        if bool::arbitrary(u)? {
            l.resume_window_ms = Some(u32_biased(u, 0)?);
        }
        Ok(l)
    }
}

impl<'a> Arbitrary<'a> for Hello {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let n_caps = u.int_in_range(0u8..=32)? as usize;
        let n_caps = if u.ratio(3, 4)? { n_caps % 3 } else { n_caps };
        let mut capabilities = Vec::with_capacity(n_caps);
        for _ in 0..n_caps {
            capabilities.push(text(u, 1, 64)?);
        }
        Ok(Hello {
            versions: Versions::arbitrary(u)?,
            capabilities,
            limits: HelloLimits::arbitrary(u)?,
            heartbeat_ms: Option::<u32>::arbitrary(u)?,
            connection_id: opt_text(u, 1, 64)?,
            resume_token: if bool::arbitrary(u)? {
                Some(bin(u, 1, 64)?)
            } else {
                None
            },
            tools: if u.ratio(3, 4)? {
                u.int_in_range(0..=3)?
            } else {
                u16::arbitrary(u)?
            },
            agent: opt_text(u, 0, 256)?,
        })
    }
}

impl<'a> Arbitrary<'a> for Invoke {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Invoke {
            id: client_id(u)?,
            tool: text(u, 1, 128)?,
            args: opt_raw(u)?,
            deadline_ms: if bool::arbitrary(u)? {
                0
            } else {
                u32_biased(u, 0)?
            },
            meta: opt_raw(u)?,
        })
    }
}

impl<'a> Arbitrary<'a> for Stream {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let id = client_id(u)?;
        let is_text = bool::arbitrary(u)?;
        let fin = bool::arbitrary(u)?;
        // SPEC §5.3: only the final chunk may be empty.
        let min = usize::from(!fin);
        let data = if is_text {
            text(u, min, usize::MAX)?.as_bytes().clone()
        } else {
            bin(u, min, usize::MAX)?
        };
        Ok(Stream {
            id,
            data,
            text: is_text,
            seq: if u.ratio(3, 4)? {
                u.int_in_range(0..=3)?
            } else {
                u32::arbitrary(u)?
            },
            fin,
        })
    }
}

impl<'a> Arbitrary<'a> for Interrupt {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Interrupt {
            id: if bool::arbitrary(u)? {
                client_id(u)?
            } else {
                server_id(u)?
            },
            reason: opt_text(u, 0, 1024)?,
        })
    }
}

impl<'a> Arbitrary<'a> for ToolOp {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(*u.choose(&[ToolOp::Add, ToolOp::Update, ToolOp::Remove])?)
    }
}

impl<'a> Arbitrary<'a> for ToolDef {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(ToolDef {
            op: ToolOp::arbitrary(u)?,
            name: text(u, 1, 128)?,
            description: text(u, 0, 65535)?,
            input_schema: opt_raw(u)?,
            annotations: opt_raw(u)?,
        })
    }
}

impl<'a> Arbitrary<'a> for Status {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(*u.choose(&[Status::Ok, Status::Cancelled, Status::Failed])?)
    }
}

impl<'a> Arbitrary<'a> for Metrics {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Metrics {
            wall_us: Option::arbitrary(u)?,
            cpu_us: Option::arbitrary(u)?,
            input_tokens: Option::arbitrary(u)?,
            output_tokens: Option::arbitrary(u)?,
        })
    }
}

impl<'a> Arbitrary<'a> for Complete {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Complete {
            id: client_id(u)?,
            status: Status::arbitrary(u)?,
            result: opt_raw(u)?,
            metrics: Metrics::arbitrary(u)?,
        })
    }
}

impl<'a> Arbitrary<'a> for ErrorFrame {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(ErrorFrame {
            id: RequestId::arbitrary(u)?,
            code: ErrorCode::arbitrary(u)?,
            message: opt_text(u, 0, 1024)?,
            retryable: bool::arbitrary(u)?,
            frame_type: if bool::arbitrary(u)? {
                Some(u.int_in_range(0..=15)?)
            } else {
                None
            },
        })
    }
}

impl<'a> Arbitrary<'a> for Request {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Request {
            id: server_id(u)?,
            kind: text(u, 1, 64)?,
            body: opt_raw(u)?,
            invocation: if bool::arbitrary(u)? {
                Some(client_id(u)?)
            } else {
                None
            },
        })
    }
}

impl<'a> Arbitrary<'a> for ReplyStatus {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(*u.choose(&[
            ReplyStatus::Answered,
            ReplyStatus::Cancelled,
            ReplyStatus::Declined,
        ])?)
    }
}

impl<'a> Arbitrary<'a> for Reply {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Reply {
            id: server_id(u)?,
            status: ReplyStatus::arbitrary(u)?,
            body: opt_raw(u)?,
        })
    }
}

impl<'a> Arbitrary<'a> for Credit {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Credit {
            id: client_id(u)?,
            bytes: u32_biased(u, 1)?,
        })
    }
}

impl<'a> Arbitrary<'a> for GoAway {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(GoAway {
            reason: opt_text(u, 0, 1024)?,
            timeout_ms: if bool::arbitrary(u)? {
                0
            } else {
                u32_biased(u, 0)?
            },
        })
    }
}

impl<'a> Arbitrary<'a> for Resume {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Resume {
            token: if bool::arbitrary(u)? {
                Some(bin(u, 1, 64)?)
            } else {
                None
            },
            received: if u.ratio(3, 4)? {
                u64::from(u8::arbitrary(u)?)
            } else {
                u64::arbitrary(u)?
            },
        })
    }
}

impl<'a> Arbitrary<'a> for Frame {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match FrameType::arbitrary(u)? {
            FrameType::Hello => Frame::Hello(Hello::arbitrary(u)?),
            FrameType::Invoke => Frame::Invoke(Invoke::arbitrary(u)?),
            FrameType::Stream => Frame::Stream(Stream::arbitrary(u)?),
            FrameType::Interrupt => Frame::Interrupt(Interrupt::arbitrary(u)?),
            FrameType::ToolDef => Frame::ToolDef(ToolDef::arbitrary(u)?),
            FrameType::Complete => Frame::Complete(Complete::arbitrary(u)?),
            FrameType::Error => Frame::Error(ErrorFrame::arbitrary(u)?),
            FrameType::Ping => Frame::Ping(Heartbeat {
                received: Option::<u64>::arbitrary(u)?,
            }),
            FrameType::Pong => Frame::Pong(Heartbeat {
                received: Option::<u64>::arbitrary(u)?,
            }),
            FrameType::Request => Frame::Request(Request::arbitrary(u)?),
            FrameType::Reply => Frame::Reply(Reply::arbitrary(u)?),
            FrameType::Credit => Frame::Credit(Credit::arbitrary(u)?),
            FrameType::GoAway => Frame::GoAway(GoAway::arbitrary(u)?),
            FrameType::Resume => Frame::Resume(Resume::arbitrary(u)?),
        })
    }
}
