//! What ONNX Runtime reports about a session: which providers ran its nodes (from its profile) and what its
//! allocators hold.

/// Counts the node events of an ORT profile (a JSON array of Chrome trace events) per provider. ORT writes three
/// events per node and run (`<node>_fence_before`, `<node>_kernel_time`, `<node>_fence_after`), all with
/// `"cat": "Node"`; the `_kernel_time` one carries `args.provider`, so those are counted.
pub fn placement_from_profile(profile: &str) -> Result<Vec<(String, usize)>, String> {
    let events: Vec<serde_json::Value> =
        serde_json::from_str(profile).map_err(|e| e.to_string())?;
    let mut counts: Vec<(String, usize)> = Vec::new();
    for event in &events {
        if event.get("cat").and_then(|c| c.as_str()) != Some("Node") {
            continue;
        }
        let name = event
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or_default();
        if !name.ends_with("_kernel_time") {
            continue;
        }
        let Some(provider) = event.pointer("/args/provider").and_then(|p| p.as_str()) else {
            return Err(format!("node event '{name}' names no provider"));
        };
        match counts.iter_mut().find(|(p, _)| p == provider) {
            Some((_, n)) => *n += 1,
            None => counts.push((provider.to_owned(), 1)),
        }
    }
    if counts.is_empty() {
        return Err("it holds no node events".to_owned());
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(counts)
}

/// The statistics ONNX Runtime keeps for the allocator of `session` on `memory` (for the arena allocators:
/// `InUse`, `MaxInUse`, `TotalAllocated`, `NumAllocs`, … in bytes or counts), as key/value text pairs.
pub fn allocator_stats(
    session: &ort::session::Session,
    memory: &ort::memory::MemoryInfo<'_>,
) -> Result<Vec<(String, String)>, String> {
    use std::ffi::{c_char, CStr};
    let allocator = ort::memory::Allocator::new(session, memory.to_owned())
        .map_err(|e| format!("onnxruntime has no allocator for {memory:?}: {e}"))?;
    let api = ort::api();
    let text = |p: *const c_char| {
        // SAFETY: ONNX Runtime hands out NUL-terminated strings that live as long as their owner.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    };
    let mut pairs: *mut ort::sys::OrtKeyValuePairs = std::ptr::null_mut();
    // SAFETY: the allocator pointer is valid while `allocator` lives; `pairs` receives an owned object.
    let status = unsafe { (api.AllocatorGetStats)(ort::AsPointer::ptr(&allocator), &mut pairs) };
    if !status.0.is_null() {
        // SAFETY: a non-null status is an error we own: read its message, then release it.
        let message = text(unsafe { (api.GetErrorMessage)(status.0) });
        unsafe { (api.ReleaseStatus)(status.0) };
        return Err(format!("onnxruntime allocator statistics: {message}"));
    }
    let (mut keys, mut values, mut count) = (std::ptr::null(), std::ptr::null(), 0usize);
    // SAFETY: `pairs` is the valid object returned above; the arrays it fills are owned by it.
    unsafe { (api.GetKeyValuePairs)(pairs, &mut keys, &mut values, &mut count) };
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        // SAFETY: `count` entries in each array, as reported.
        out.push(unsafe { (text(*keys.add(i)), text(*values.add(i))) });
    }
    // SAFETY: released once, after its strings were copied.
    unsafe { (api.ReleaseKeyValuePairs)(pairs) };
    Ok(out)
}
