//! Compile-fail UI tests of `#[register_model]` and `model_enum!`: each misuse is a
//! compile error at the right span with a problem-then-fix message.
//! Regenerate the expected output with `TRYBUILD=overwrite cargo test -p zoo-tests --test compiletest`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/register_model/*.rs");
}
