//! A minimal pickle virtual machine for the `data.pkl` of a `torch.save` zip archive.
//!
//! It runs exactly the opcodes that `torch.save` (pickle protocol 2) emits for a dict of tensors,
//! `None`s, numbers and strings, plus a few plain ones a re-save could use (protocol 4 framing and
//! memoization, short strings, lists). Anything else is an error that names the opcode and its byte
//! offset. No arbitrary callable can run: `GLOBAL` only resolves
//! `torch._utils._rebuild_tensor_v2`, `collections.OrderedDict` and the `torch.*Storage` classes,
//! and `BINPERSID` only accepts torch's `('storage', class, key, location, numel)` ids. Tensors stay
//! lazy ([`TensorRef`]): their data lives in the archive's `data/<key>` entries.
use std::collections::HashMap;

/// A callable or class named by `GLOBAL`.
#[derive(Clone, Debug, PartialEq)]
pub enum Global {
    /// `torch._utils._rebuild_tensor_v2`.
    RebuildTensorV2,
    /// `collections.OrderedDict`.
    OrderedDict,
    /// A storage class `torch.<name>`, e.g. `FloatStorage`.
    StorageClass(String),
}

/// A storage referenced by `BINPERSID`: the archive entry `data/<key>` holds `numel` elements of the
/// class's dtype.
#[derive(Clone, Debug, PartialEq)]
pub struct StorageRef {
    /// The storage class name, e.g. `FloatStorage` (from `torch.FloatStorage`).
    pub class: String,
    pub key: String,
    pub numel: usize,
}

/// A tensor as `_rebuild_tensor_v2` describes it: a view (`offset`, `shape`, `stride`, all in
/// elements) into a storage.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorRef {
    /// The storage: a [`Value::Storage`] of the same [`Pickle`] ([`Pickle::storage`] reads it).
    pub storage: Value,
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

/// The most dimensions a tensor may have (torch's own limit is 64; a voice's tensors have 1 to 3).
pub const MAX_RANK: usize = 16;

/// The index of an object in the arena of a [`Pickle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Obj(usize);

/// A value on the pickle stack: a scalar, or a handle to an object of the [`Pickle`] that made it
/// (read through its accessors). Handles are copied, never the objects: the memo and the stack
/// refer to the same dict or list, which `SETITEMS`/`APPENDS` then fill.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Obj),
    Tuple(Obj),
    List(Obj),
    Dict(Obj),
    Global(Obj),
    Storage(Obj),
    Tensor(Obj),
}

impl Value {
    /// A short name of the value's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }
}

/// An object of the arena.
#[derive(Debug)]
enum Object {
    Str(String),
    /// The items of a tuple or a list.
    Items(Vec<Value>),
    /// (key, value) pairs in the order they were set.
    Dict(Vec<(Value, Value)>),
    Global(Global),
    Storage(StorageRef),
    Tensor(TensorRef),
}

/// The result of [`unpickle`]: its root value and the arena of every object the pickle made.
///
/// Every object lives in the arena and refers to others by index only, so that what a pickle can
/// build stays linear in its size and harmless: a memo read (`GET`) copies a handle, not a subtree
/// (no doubling per opcode); a dict put into itself is a cycle of indices, not leaked `Rc`s;
/// dropping the result is flat however deeply the pickle nests. Walking a value recursively can
/// loop on such a cycle: look values up by path instead, as the voice reader does.
#[derive(Debug)]
pub struct Pickle {
    objects: Vec<Object>,
    root: Value,
}

impl Pickle {
    /// The value `STOP` left.
    pub fn root(&self) -> Value {
        self.root
    }

    fn object(&self, o: Obj) -> &Object {
        &self.objects[o.0]
    }

    /// The text of a [`Value::Str`].
    pub fn str(&self, v: Value) -> Option<&str> {
        match v {
            Value::Str(o) => match self.object(o) {
                Object::Str(s) => Some(s),
                _ => None,
            },
            _ => None,
        }
    }

    /// The items of a [`Value::Tuple`] or a [`Value::List`].
    pub fn items(&self, v: Value) -> Option<&[Value]> {
        match v {
            Value::Tuple(o) | Value::List(o) => match self.object(o) {
                Object::Items(items) => Some(items),
                _ => None,
            },
            _ => None,
        }
    }

    /// The (key, value) pairs of a [`Value::Dict`] in the order they were set; a key set twice is
    /// listed twice ([`Pickle::get`] gives the later value, as Python does).
    pub fn dict(&self, v: Value) -> Option<&[(Value, Value)]> {
        match v {
            Value::Dict(o) => match self.object(o) {
                Object::Dict(items) => Some(items),
                _ => None,
            },
            _ => None,
        }
    }

    /// The value of the string key `key` in the dict `dict` (the last one set), if any.
    pub fn get(&self, dict: Value, key: &str) -> Option<Value> {
        self.dict(dict)?.iter().rev().find(|(k, _)| self.str(*k) == Some(key)).map(|(_, v)| *v)
    }

    /// The callable or class of a [`Value::Global`].
    pub fn global(&self, v: Value) -> Option<&Global> {
        match v {
            Value::Global(o) => match self.object(o) {
                Object::Global(g) => Some(g),
                _ => None,
            },
            _ => None,
        }
    }

    /// The storage of a [`Value::Storage`].
    pub fn storage(&self, v: Value) -> Option<&StorageRef> {
        match v {
            Value::Storage(o) => match self.object(o) {
                Object::Storage(s) => Some(s),
                _ => None,
            },
            _ => None,
        }
    }

    /// The view of a [`Value::Tensor`].
    pub fn tensor(&self, v: Value) -> Option<&TensorRef> {
        match v {
            Value::Tensor(o) => match self.object(o) {
                Object::Tensor(t) => Some(t),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The name pickletools gives an opcode byte, for error messages (`None` for bytes that are no
/// opcode at all).
fn opcode_name(op: u8) -> Option<&'static str> {
    Some(match op {
        b'(' => "MARK",
        b'.' => "STOP",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'L' => "LONG",
        b'M' => "BININT2",
        b'N' => "NONE",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'R' => "REDUCE",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'X' => "BINUNICODE",
        b'a' => "APPEND",
        b'b' => "BUILD",
        b'c' => "GLOBAL",
        b'd' => "DICT",
        b'}' => "EMPTY_DICT",
        b'e' => "APPENDS",
        b'g' => "GET",
        b'h' => "BINGET",
        b'i' => "INST",
        b'j' => "LONG_BINGET",
        b'l' => "LIST",
        b']' => "EMPTY_LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        b's' => "SETITEM",
        b't' => "TUPLE",
        b')' => "EMPTY_TUPLE",
        b'u' => "SETITEMS",
        b'G' => "BINFLOAT",
        0x80 => "PROTO",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        0x8a => "LONG1",
        0x8b => "LONG4",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        _ => return None,
    })
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len()).ok_or_else(|| {
            format!(
                "data.pkl: truncated pickle: {what} needs {n} bytes at byte {}, {} left",
                self.pos,
                self.data.len() - self.pos
            )
        })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
    }
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn line(&mut self, what: &str) -> Result<&'a str, String> {
        let rest = &self.data[self.pos..];
        let n =
            rest.iter().position(|&b| b == b'\n').ok_or_else(|| format!("data.pkl: truncated pickle: {what} has no newline"))?;
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| format!("data.pkl: {what} is not UTF-8 at byte {}", self.pos))?;
        self.pos += n + 1;
        Ok(s)
    }
    fn utf8(&mut self, n: usize, what: &str) -> Result<String, String> {
        let at = self.pos;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| format!("data.pkl: {what} at byte {at} is not valid UTF-8"))
    }
}

fn resolve_global(module: &str, name: &str) -> Result<Global, String> {
    match (module, name) {
        ("torch._utils", "_rebuild_tensor_v2") => Ok(Global::RebuildTensorV2),
        ("collections", "OrderedDict") => Ok(Global::OrderedDict),
        ("torch", n) if n.ends_with("Storage") => Ok(Global::StorageClass(n.to_string())),
        _ => Err(format!(
            "data.pkl: unsupported global '{module}.{name}' (only torch._utils._rebuild_tensor_v2, collections.OrderedDict and \
             torch.*Storage are allowed)"
        )),
    }
}

fn non_negative(v: Value, what: &str) -> Result<usize, String> {
    match v {
        Value::Int(i) if i >= 0 => usize::try_from(i).map_err(|_| format!("data.pkl: {what} {i} is too large")),
        Value::Int(i) => Err(format!("data.pkl: {what} is negative ({i})")),
        other => Err(format!("data.pkl: {what} must be an int, found {}", other.kind())),
    }
}

/// A running pickle: the arena being filled (its root is set at `STOP`), the stack, the marks and
/// the memo.
struct Vm {
    p: Pickle,
    stack: Vec<Value>,
    /// Stack heights at each open `MARK`.
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

impl Vm {
    fn alloc(&mut self, o: Object) -> Obj {
        self.p.objects.push(o);
        Obj(self.p.objects.len() - 1)
    }

    fn push(&mut self, v: Value) {
        self.stack.push(v);
    }

    fn pop(&mut self, op: &str, at: usize) -> Result<Value, String> {
        if self.marks.last().is_some_and(|&m| self.stack.len() <= m) {
            return Err(format!("data.pkl: {op} at byte {at} pops across a MARK"));
        }
        self.stack.pop().ok_or_else(|| format!("data.pkl: {op} at byte {at} on an empty stack"))
    }

    fn pop_mark(&mut self, op: &str, at: usize) -> Result<Vec<Value>, String> {
        let m = self.marks.pop().ok_or_else(|| format!("data.pkl: {op} at byte {at} without a MARK"))?;
        Ok(self.stack.split_off(m))
    }

    fn tuple(&mut self, items: Vec<Value>) -> Value {
        Value::Tuple(self.alloc(Object::Items(items)))
    }

    /// The pairs of the dict on top of the stack (where `SETITEMS` puts its items), if it is one.
    fn top_dict(&mut self) -> Option<&mut Vec<(Value, Value)>> {
        let Value::Dict(o) = *self.stack.last()? else { return None };
        match &mut self.p.objects[o.0] {
            Object::Dict(pairs) => Some(pairs),
            _ => None,
        }
    }

    /// The items of the list on top of the stack (where `APPENDS` puts its items), if it is one.
    fn top_list(&mut self) -> Option<&mut Vec<Value>> {
        let Value::List(o) = *self.stack.last()? else { return None };
        match &mut self.p.objects[o.0] {
            Object::Items(items) => Some(items),
            _ => None,
        }
    }
}

fn usize_tuple(p: &Pickle, v: Value, what: &str) -> Result<Vec<usize>, String> {
    let items = match v {
        Value::Tuple(_) => p.items(v).unwrap_or_default(),
        other => return Err(format!("data.pkl: {what} must be a tuple, found {}", other.kind())),
    };
    if items.len() > MAX_RANK {
        return Err(format!("data.pkl: {what} has {} dimensions, more than the {MAX_RANK} supported", items.len()));
    }
    items.iter().map(|&x| non_negative(x, what)).collect()
}

fn persistent_id(p: &Pickle, pid: Value) -> Result<StorageRef, String> {
    let Value::Tuple(_) = pid else {
        return Err(format!("data.pkl: persistent id must be a tuple, found {}", pid.kind()));
    };
    let items = p.items(pid).unwrap_or_default();
    if let &[tag, class, key, location, numel] = items
        && p.str(tag) == Some("storage")
        && let Some(Global::StorageClass(class)) = p.global(class)
        && let Some(key) = p.str(key)
        && p.str(location).is_some()
    {
        return Ok(StorageRef { class: class.clone(), key: key.to_string(), numel: non_negative(numel, "storage numel")? });
    }
    Err(format!(
        "data.pkl: unsupported persistent id (expected ('storage', torch.XStorage, key, location, numel)), got a tuple of {} \
         items: ({})",
        items.len(),
        items.iter().map(Value::kind).collect::<Vec<_>>().join(", ")
    ))
}

/// What an allowed global returned.
enum Called {
    Dict,
    Tensor(TensorRef),
}

fn call(p: &Pickle, callable: Value, args: Value) -> Result<Called, String> {
    let Value::Tuple(_) = args else {
        return Err(format!("data.pkl: REDUCE arguments must be a tuple, found {}", args.kind()));
    };
    let args = p.items(args).unwrap_or_default();
    match p.global(callable) {
        Some(Global::OrderedDict) if args.is_empty() => Ok(Called::Dict),
        Some(Global::OrderedDict) => Err("data.pkl: OrderedDict called with arguments (unsupported)".into()),
        Some(Global::RebuildTensorV2) => {
            // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
            if !(6..=7).contains(&args.len()) {
                return Err(format!("data.pkl: _rebuild_tensor_v2 takes 6 or 7 arguments, got {}", args.len()));
            }
            let Value::Storage(_) = args[0] else {
                return Err(format!("data.pkl: _rebuild_tensor_v2's first argument must be a storage, found {}", args[0].kind()));
            };
            let offset = non_negative(args[1], "tensor storage_offset")?;
            let shape = usize_tuple(p, args[2], "tensor size")?;
            let stride = usize_tuple(p, args[3], "tensor stride")?;
            if shape.len() != stride.len() {
                return Err(format!("data.pkl: tensor size {shape:?} and stride {stride:?} differ in rank"));
            }
            Ok(Called::Tensor(TensorRef { storage: args[0], offset, shape, stride }))
        }
        Some(Global::StorageClass(c)) => Err(format!("data.pkl: calling torch.{c} is unsupported")),
        None => Err(format!("data.pkl: REDUCE on a {} (only allowed globals can be called)", callable.kind())),
    }
}

/// Runs the pickle `data` and returns the value `STOP` leaves, with every object it made.
pub fn unpickle(data: &[u8]) -> Result<Pickle, String> {
    let mut r = Reader { data, pos: 0 };
    let mut vm =
        Vm { p: Pickle { objects: Vec::new(), root: Value::None }, stack: Vec::new(), marks: Vec::new(), memo: HashMap::new() };

    loop {
        let at = r.pos;
        let op = r.u8("opcode")?;
        let name = opcode_name(op).unwrap_or("?");
        match op {
            0x80 => {
                let proto = r.u8("PROTO")?;
                if proto > 5 {
                    return Err(format!("data.pkl: unsupported pickle protocol {proto}"));
                }
            }
            0x95 => {
                r.take(8, "FRAME")?;
            }
            b'.' => {
                let v = vm.pop(name, at)?;
                if !vm.stack.is_empty() || !vm.marks.is_empty() {
                    return Err(format!(
                        "data.pkl: STOP at byte {at} with {} values and {} marks left on the stack",
                        vm.stack.len(),
                        vm.marks.len()
                    ));
                }
                vm.p.root = v;
                return Ok(vm.p);
            }
            b'(' => vm.marks.push(vm.stack.len()),
            b'}' => {
                let d = vm.alloc(Object::Dict(Vec::new()));
                vm.push(Value::Dict(d));
            }
            b']' => {
                let l = vm.alloc(Object::Items(Vec::new()));
                vm.push(Value::List(l));
            }
            b')' => {
                let t = vm.tuple(Vec::new());
                vm.push(t);
            }
            b't' => {
                let items = vm.pop_mark(name, at)?;
                let t = vm.tuple(items);
                vm.push(t);
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(vm.pop(name, at)?);
                }
                items.reverse();
                let t = vm.tuple(items);
                vm.push(t);
            }
            b'N' => vm.push(Value::None),
            0x88 => vm.push(Value::Bool(true)),
            0x89 => vm.push(Value::Bool(false)),
            b'J' => vm.push(Value::Int(r.u32(name)? as i32 as i64)),
            b'K' => vm.push(Value::Int(r.u8(name)? as i64)),
            b'M' => vm.push(Value::Int(r.u16(name)? as i64)),
            0x8a => {
                let n = r.u8(name)? as usize;
                let bytes = r.take(n, name)?;
                if n > 8 {
                    return Err(format!("data.pkl: LONG1 at byte {at} has {n} bytes (more than 64 bits)"));
                }
                // Little-endian two's complement, sign-extended.
                let fill = if bytes.last().is_some_and(|b| b & 0x80 != 0) { 0xff } else { 0 };
                let mut buf = [fill; 8];
                buf[..n].copy_from_slice(bytes);
                vm.push(Value::Int(i64::from_le_bytes(buf)));
            }
            b'G' => {
                let b: [u8; 8] = r.take(8, name)?.try_into().unwrap();
                vm.push(Value::Float(f64::from_be_bytes(b)));
            }
            b'X' | 0x8c => {
                let n = if op == b'X' { r.u32(name)? as usize } else { r.u8(name)? as usize };
                let s = vm.alloc(Object::Str(r.utf8(n, name)?));
                vm.push(Value::Str(s));
            }
            b'c' => {
                let module = r.line("GLOBAL module")?;
                let gname = r.line("GLOBAL name")?;
                let g = vm.alloc(Object::Global(resolve_global(module, gname)?));
                vm.push(Value::Global(g));
            }
            b'q' | b'r' | 0x94 => {
                let idx = match op {
                    b'q' => r.u8(name)? as u32,
                    b'r' => r.u32(name)?,
                    _ => vm.memo.len() as u32,
                };
                let top = *vm.stack.last().ok_or_else(|| format!("data.pkl: {name} at byte {at} on an empty stack"))?;
                vm.memo.insert(idx, top);
            }
            b'h' | b'j' => {
                let idx = if op == b'h' { r.u8(name)? as u32 } else { r.u32(name)? };
                let v = *vm
                    .memo
                    .get(&idx)
                    .ok_or_else(|| format!("data.pkl: {name} at byte {at} reads memo {idx}, which was never set"))?;
                vm.push(v);
            }
            b'Q' => {
                let pid = vm.pop(name, at)?;
                let storage = persistent_id(&vm.p, pid)?;
                let s = vm.alloc(Object::Storage(storage));
                vm.push(Value::Storage(s));
            }
            b'R' => {
                let args = vm.pop(name, at)?;
                let callable = vm.pop(name, at)?;
                let v = match call(&vm.p, callable, args)? {
                    Called::Dict => Value::Dict(vm.alloc(Object::Dict(Vec::new()))),
                    Called::Tensor(t) => Value::Tensor(vm.alloc(Object::Tensor(t))),
                };
                vm.push(v);
            }
            b's' | b'u' => {
                let items = if op == b'u' {
                    vm.pop_mark(name, at)?
                } else {
                    let v = vm.pop(name, at)?;
                    let k = vm.pop(name, at)?;
                    vec![k, v]
                };
                if items.len() % 2 != 0 {
                    return Err(format!("data.pkl: {name} at byte {at} has an odd number of items ({})", items.len()));
                }
                let found = vm.stack.last().map_or("nothing", Value::kind);
                let Some(pairs) = vm.top_dict() else {
                    return Err(format!("data.pkl: {name} at byte {at} expects a dict below its items, found {found}"));
                };
                // Appended even when the key is already there: lookups take the last one
                // (Pickle::get), which is Python's result without a quadratic search per item.
                pairs.extend(items.chunks_exact(2).map(|kv| (kv[0], kv[1])));
            }
            b'a' | b'e' => {
                let items = if op == b'e' { vm.pop_mark(name, at)? } else { vec![vm.pop(name, at)?] };
                let found = vm.stack.last().map_or("nothing", Value::kind);
                let Some(list) = vm.top_list() else {
                    return Err(format!("data.pkl: {name} at byte {at} expects a list below its items, found {found}"));
                };
                list.extend(items);
            }
            _ => {
                return Err(match opcode_name(op) {
                    Some(n) => format!("data.pkl: unsupported pickle opcode {n} (0x{op:02x}) at byte {at}"),
                    None => format!("data.pkl: invalid pickle opcode 0x{op:02x} at byte {at}"),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict_get(p: &Pickle, v: Value, key: &str) -> Value {
        p.get(v, key).unwrap_or_else(|| panic!("no key {key} in a {}", v.kind()))
    }

    #[test]
    fn scalars_dicts_lists_and_memo() {
        // {'a': 1, 'b': [None, True, -2, 1.5], 'c': 'x', 'd': (300, 70000), 'e': -129, 'f': <memo 2 = 'x'>}
        let mut p = vec![0x80, 2, b'}', b'q', 0, b'(', b'X', 1, 0, 0, 0, b'a', b'K', 1, b'X', 1, 0, 0, 0, b'b', b']', b'q', 1];
        p.extend([b'(', b'N', 0x88, b'J', 0xfe, 0xff, 0xff, 0xff, b'G']);
        p.extend(1.5f64.to_be_bytes());
        p.extend([b'e', 0x8c, 1, b'c', 0x8c, 1, b'x', b'q', 2, 0x8c, 1, b'd', b'M', 0x2c, 0x01, b'J', 0x70, 0x11, 0x01, 0]);
        p.extend([0x86, 0x8c, 1, b'e', 0x8a, 2, 0x7f, 0xff, b'u', b'X', 1, 0, 0, 0, b'f', b'h', 2, b's', b'.']);
        let p = unpickle(&p).unwrap();
        let v = p.root();
        assert!(matches!(dict_get(&p, v, "a"), Value::Int(1)));
        let l = dict_get(&p, v, "b");
        assert!(matches!(l, Value::List(_)));
        assert!(matches!(p.items(l).unwrap(), [Value::None, Value::Bool(true), Value::Int(-2), Value::Float(f)] if *f == 1.5));
        assert_eq!(p.str(dict_get(&p, v, "c")), Some("x"));
        let d = dict_get(&p, v, "d");
        assert!(matches!(d, Value::Tuple(_)) && matches!(p.items(d).unwrap(), [Value::Int(300), Value::Int(70000)]));
        assert!(matches!(dict_get(&p, v, "e"), Value::Int(-129)));
        assert_eq!(p.str(dict_get(&p, v, "f")), Some("x"));

        // The memo refers to the same dict as the stack: (d, d) after d['k'] = 1 holds 'k' twice.
        let p = unpickle(b"\x80\x02(}q\x00X\x01\x00\x00\x00kK\x01sh\x00t.").unwrap();
        let t = p.items(p.root()).unwrap();
        assert_eq!(t.len(), 2);
        assert!(t.iter().all(|&d| matches!(dict_get(&p, d, "k"), Value::Int(1))));
    }

    #[test]
    fn rebuild_tensor() {
        let mut p = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\n".to_vec();
        p.extend(b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x06tQK\x01K\x02K\x02\x86K\x01K\x02\x86\x89");
        p.extend(b"ccollections\nOrderedDict\n)RtR.");
        let p = unpickle(&p).unwrap();
        let t = p.tensor(p.root()).unwrap();
        assert_eq!(p.storage(t.storage).unwrap(), &StorageRef { class: "FloatStorage".into(), key: "0".into(), numel: 6 });
        assert_eq!((t.offset, &t.shape[..], &t.stride[..]), (1, &[2, 2][..], &[1, 2][..]));
    }

    #[test]
    fn errors_name_the_problem() {
        let cases: &[(&[u8], &str)] = &[
            (b"\x80\x02cos\nsystem\n.", "unsupported global 'os.system'"),
            (b"\x80\x02]\x94].", "STOP at byte 5 with 1 values and 0 marks left on the stack"),
            (b"\x80\x02X\x05\x00\x00\x00ab", "truncated pickle"),
            (b"\x80\x02}q\x00", "truncated pickle: opcode"),
            (b"\x80\x02h\x05.", "memo 5, which was never set"),
            (b"\x80\x02t.", "without a MARK"),
            (b"\x80\x02.", "empty stack"),
            (b"\x80\x02(.", "pops across a MARK"),
            (b"\x80\x02\xff", "invalid pickle opcode 0xff"),
            (b"\x80\x02\x93", "unsupported pickle opcode STACK_GLOBAL (0x93) at byte 2"),
            (b"\x80\x02)Q", "unsupported persistent id"),
            (b"\x80\x02NQ", "persistent id must be a tuple, found None"),
            (b"\x80\x02N)R", "REDUCE on a None"),
            (b"\x80\x02NNs", "expects a dict"),
        ];
        for (p, want) in cases {
            let err = unpickle(p).unwrap_err();
            assert!(err.contains(want), "{p:?}: {err} (wanted {want})");
        }
    }
}
