//! `liengate decode`: find every frame in some bytes, decode it and print one JSON object per frame.
//!
//! This is the tool a person reaches for with a hex dump from a device log or a packet capture, and
//! the one scripts pipe into `jq`. Rejected frames are printed too (as `{"error":{...}}`), and the
//! process exits non-zero when any frame was rejected so that scripts notice.
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use liengate_protocols::jt808::{self, json, DecodeOptions, Split, Splitter};
use serde_json::Value;

/// Wire protocols `decode` understands.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Protocol {
    Jt808,
}

#[derive(clap::Args, Debug)]
pub struct DecodeArgs {
    /// Protocol of the input.
    #[arg(long, value_enum, default_value = "jt808")]
    pub protocol: Protocol,
    /// Frames as hex; spaces, newlines and `0x` prefixes are ignored.
    #[arg(long, conflicts_with = "file")]
    pub hex: Option<String>,
    /// Read frames from a file: raw bytes, or hex text (detected automatically).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Accept frames whose XOR check code is wrong (some firmware sends them); they are still flagged.
    #[arg(long)]
    pub skip_checksum: bool,
    /// Pretty-print each JSON object over several lines.
    #[arg(long)]
    pub pretty: bool,
}

pub fn run(args: DecodeArgs) -> anyhow::Result<ExitCode> {
    let input = read_input(&args)?;
    let Protocol::Jt808 = args.protocol;
    let report = decode_jt808(&input, args.skip_checksum);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for value in &report.objects {
        let line = if args.pretty {
            serde_json::to_string_pretty(value)?
        } else {
            serde_json::to_string(value)?
        };
        writeln!(out, "{line}")?;
    }
    if report.objects.is_empty() {
        eprintln!("liengate decode: no frame found in {} bytes", input.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(if report.rejected > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// What one decode run produced: JSON objects in input order and how many frames were rejected.
pub struct DecodeReport {
    pub objects: Vec<Value>,
    pub rejected: usize,
}

/// Splits `input` into JT808 frames and decodes each one, resynchronising after a bad frame.
pub fn decode_jt808(input: &[u8], skip_checksum: bool) -> DecodeReport {
    let opts = DecodeOptions {
        skip_checksum,
        ..DecodeOptions::default()
    };
    let mut splitter = Splitter::new(jt808::DEFAULT_MAX_FRAME);
    let mut scratch = [0u8; jt808::MAX_LOGICAL_FRAME];
    let mut report = DecodeReport {
        objects: Vec::new(),
        rejected: 0,
    };
    let mut pos = 0;
    while pos < input.len() {
        let rest = &input[pos..];
        match splitter.next(rest) {
            Split::Frame { frame, consumed } => {
                let wire = &rest[frame];
                match jt808::decode_frame(wire, &mut scratch, &opts) {
                    Ok((packet, message)) => {
                        report
                            .objects
                            .push(with_locations(json::frame_json(&packet, &message)));
                    }
                    Err(mut err) => {
                        err.offset += pos;
                        report.rejected += 1;
                        report.objects.push(json::error_json(&err));
                    }
                }
                pos += consumed.max(1);
            }
            Split::Invalid {
                mut error,
                consumed,
            } => {
                error.offset += pos;
                report.rejected += 1;
                report.objects.push(json::error_json(&error));
                pos += consumed.max(1);
            }
            Split::Incomplete { consumed } => {
                pos += consumed;
                if pos < input.len() {
                    // The input ended inside a frame: nothing more will come, so it is truncated.
                    let error = jt808::Error::new(
                        jt808::ErrorKind::Truncated,
                        pos,
                        "input ended inside a frame (no closing 0x7e)",
                    );
                    report.rejected += 1;
                    report.objects.push(json::error_json(&error));
                }
                break;
            }
        }
    }
    report
}

/// Scripts want every position of a frame in one place: a 0x0704 batch also gets a top-level
/// `locations` array holding its items, in the order the device sent them.
fn with_locations(mut value: Value) -> Value {
    let items = value
        .get("batch")
        .and_then(|batch| batch.get("items"))
        .cloned();
    if let (Some(items), Some(object)) = (items, value.as_object_mut()) {
        object.insert("locations".to_owned(), items);
    }
    value
}

fn read_input(args: &DecodeArgs) -> anyhow::Result<Vec<u8>> {
    if let Some(hex_text) = &args.hex {
        return parse_hex(hex_text).context("--hex is not valid hex");
    }
    let raw = match &args.file {
        Some(path) => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read stdin")?;
            buf
        }
    };
    // A file of hex text is far more common than raw captures when people paste from logs, so
    // text that is nothing but hex digits and whitespace is read as hex; anything else as bytes.
    if looks_like_hex(&raw) {
        let text = std::str::from_utf8(&raw).context("input is not UTF-8")?;
        return parse_hex(text).context("input is not valid hex");
    }
    Ok(raw)
}

fn looks_like_hex(raw: &[u8]) -> bool {
    let mut digits = 0usize;
    for &b in raw {
        if b.is_ascii_hexdigit() {
            digits += 1;
        } else if !(b.is_ascii_whitespace() || b == b'x' || b == b'X' || b == b',') {
            return false;
        }
    }
    digits > 0
}

/// Parses hex that people paste: whitespace, commas and `0x` prefixes are ignored.
pub fn parse_hex(text: &str) -> anyhow::Result<Vec<u8>> {
    let cleaned: String = text
        .replace("0x", "")
        .replace("0X", "")
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ',')
        .collect();
    if cleaned.is_empty() {
        bail!("no hex digits");
    }
    if !cleaned.len().is_multiple_of(2) {
        bail!("odd number of hex digits ({})", cleaned.len());
    }
    Ok(hex::decode(&cleaned)?)
}
