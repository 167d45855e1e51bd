//! What bounds the rendering of a chat template from a stranger's file: minijinja's
//! fuel (instructions) and recursion limit, a cap on the output, and filters whose
//! numeric arguments size an allocation (`indent`, `tojson`, `slice`, `batch`,
//! `center`-like widths in `format`) checked before minijinja allocates.
//!
//! minijinja (3.x) itself charges fuel for the items its builtins iterate and refuses a
//! repeated sequence or string past 10^8 items; a value printed whole (`{{ seq }}`) is
//! measured here before it is formatted, so a 10^8-item sequence is refused at once
//! instead of being walked to the output bound.
//!
//! Known limit: a string or sequence doubled by concatenation (`{% set b = a ~ a %}`,
//! in a chain or a loop over a namespace) grows exponentially in a few instructions;
//! minijinja offers no hook on the size of a value, so only the output bound and the
//! 10^8 repetition cap stand between it and memory (docs/reliability.md).

use std::io::Write;

use minijinja::value::ValueKind;
use minijinja::value::{Rest, ValueOrKwargs};
use minijinja::{Environment, ErrorKind, Output, State, Value};

/// Instructions any render may run: real templates render within it
/// (tests/tests/chat_templates.rs renders SmolLM2's and Qwen2.5-Coder's and compares
/// with jinja2), while two nested loops over `range(100000)` stop after a fraction of
/// a second.
pub const FUEL_BASE: u64 = 1_000_000;
/// Instructions more for each message.
pub const FUEL_PER_MESSAGE: u64 = 10_000;
/// Nesting of blocks, loops and macro calls (minijinja counts a macro call as several).
pub const RECURSION_LIMIT: usize = 100;
/// Output bytes any render may write.
pub const OUTPUT_BASE: usize = 1 << 20;
/// Output bytes more for each byte of the messages (a template may repeat a message).
pub const OUTPUT_PER_INPUT_BYTE: usize = 4;
/// The largest number a size-giving filter argument may be (an indent, a batch or
/// slice count, a format width): real templates use single digits.
pub const MAX_FILTER_ARGUMENT: i128 = 10_000;

/// The filters whose numeric arguments size an allocation.
const SIZED_FILTERS: [&str; 5] = ["indent", "tojson", "slice", "batch", "format"];

/// The render's output, refusing bytes past `limit`.
pub(super) struct Bounded {
    pub(super) out: Vec<u8>,
    pub(super) limit: usize,
    pub(super) exceeded: bool,
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len() + buf.len() > self.limit {
            self.exceeded = true;
            return Err(std::io::Error::other("past the output bound"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sets the recursion limit and replaces the sized filters by checked ones (the
/// builtins stay reachable under a private name).
pub(super) fn bound(env: &mut Environment<'static>) {
    use minijinja::filters;
    env.set_recursion_limit(RECURSION_LIMIT);
    env.add_filter("__zoo_builtin_indent", filters::indent);
    env.add_filter("__zoo_builtin_tojson", filters::tojson);
    env.add_filter("__zoo_builtin_slice", filters::slice);
    env.add_filter("__zoo_builtin_batch", filters::batch);
    env.add_filter("__zoo_builtin_format", filters::format);
    for name in SIZED_FILTERS {
        env.add_filter(
            name,
            move |state: &mut State, value: Value, args: Rest<ValueOrKwargs>| {
                for a in args.iter() {
                    check(name, a)?;
                }
                if name == "format" {
                    check_widths(&value)?;
                }
                let mut all = Vec::with_capacity(args.len() + 1);
                all.push(value);
                all.extend(args.into_values());
                state.apply_filter(&format!("__zoo_builtin_{name}"), &all)
            },
        );
    }
}

/// An argument (or, for keyword arguments, each value) at most [`MAX_FILTER_ARGUMENT`].
fn check(filter: &str, v: &Value) -> Result<(), minijinja::Error> {
    if let Ok(n) = i128::try_from(v.clone()) {
        if n > MAX_FILTER_ARGUMENT {
            return Err(too_large(filter, &n.to_string()));
        }
    } else if v.kind() == minijinja::value::ValueKind::Map {
        if let Ok(keys) = v.try_iter() {
            for k in keys {
                check(filter, &v.get_item(&k).unwrap_or_default())?;
            }
        }
    }
    Ok(())
}

/// The widths and precisions of a printf-style or `str.format` format string: no run
/// of digits in it may pass [`MAX_FILTER_ARGUMENT`] (a literal number that long is
/// text, not a width, in no chat template zoo has seen).
fn check_widths(format: &Value) -> Result<(), minijinja::Error> {
    let Some(s) = format.as_str() else {
        return Ok(());
    };
    for run in s.split(|c: char| !c.is_ascii_digit()) {
        let digits = run.trim_start_matches('0');
        if digits.len() > 5
            || digits
                .parse::<i128>()
                .is_ok_and(|n| n > MAX_FILTER_ARGUMENT)
        {
            return Err(too_large("format", run));
        }
    }
    Ok(())
}

fn too_large(filter: &str, found: &str) -> minijinja::Error {
    minijinja::Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "`{filter}` was given {found}, past zoo's bound of {MAX_FILTER_ARGUMENT} for a size"
        ),
    )
}

/// The message of the formatter's refusal, which `render` reports as the output budget.
pub(super) const PRINTED_PAST_BOUND: &str = "a value prints past the output bound";

/// Sets a formatter that refuses, before formatting, a value that would print more
/// than `limit` bytes, then formats as minijinja does.
pub(super) fn bound_printing(env: &mut Environment<'static>, limit: usize) {
    env.set_formatter(move |out: &mut Output, state: &mut State, value: &Value| {
        if printed_at_least(value, limit) > limit {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                PRINTED_PAST_BOUND,
            ));
        }
        minijinja::escape_formatter(out, state, value)
    });
}

/// A lower bound on the bytes `value` prints as, counted no further than past `budget`:
/// a sequence or map of n items prints at least 2n bytes (brackets and separators), so
/// at most `budget / 2` items are visited.
fn printed_at_least(value: &Value, budget: usize) -> usize {
    match value.kind() {
        ValueKind::String => value.as_str().map_or(0, str::len),
        ValueKind::Seq | ValueKind::Iterable | ValueKind::Map => {
            if value.len().unwrap_or(0).saturating_mul(2) > budget {
                return budget + 1;
            }
            let mut total = 2;
            let Ok(items) = value.try_iter() else {
                return total;
            };
            for item in items {
                let item = match value.kind() {
                    ValueKind::Map => value.get_item(&item).unwrap_or_default(),
                    _ => item,
                };
                total += 2 + printed_at_least(&item, budget.saturating_sub(total));
                if total > budget {
                    return total;
                }
            }
            total
        }
        _ => 1,
    }
}
