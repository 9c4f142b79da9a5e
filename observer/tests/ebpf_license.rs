//! The embedded kernel programs say what they are licensed under: the kernel lets only
//! GPL-compatible programs call its GPL-only helpers, and without a `license` section aya
//! would assume "GPL" for an object whose sources are MIT or GPL-2.0.
#![cfg(not(ebpf_object_missing))]

/// The string of `observer-ebpf/src/main.rs`'s `license` section, one of the kernel's
/// GPL-compatible ones (`license_is_gpl_compatible`), matching the crate's
/// `MIT OR GPL-2.0`.
const LICENSE: &str = "Dual MIT/GPL";

#[test]
fn the_object_declares_a_gpl_compatible_dual_license() {
    let obj = aya_obj::Object::parse(observer::EBPF_OBJECT).expect("the embedded object parses");
    assert_eq!(obj.license.to_str(), Ok(LICENSE));
}
