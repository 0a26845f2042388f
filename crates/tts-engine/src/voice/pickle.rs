//! A minimal pickle virtual machine for the `data.pkl` of a `torch.save` zip archive.
//!
//! It runs exactly the opcodes that `torch.save` (pickle protocol 2) emits for a dict of tensors,
//! `None`s, numbers and strings, plus a few plain ones a re-save could use (protocol 4 framing and
//! memoization, short strings, lists). Anything else is an error that names the opcode and its byte
//! offset. No arbitrary callable can run: `GLOBAL` only resolves
//! `torch._utils._rebuild_tensor_v2`, `collections.OrderedDict` and the `torch.*Storage` classes,
//! and `BINPERSID` only accepts torch's `('storage', class, key, location, numel)` ids. Tensors stay
//! lazy ([`TensorRef`]): their data lives in the archive's `data/<key>` entries.
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

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
    pub storage: StorageRef,
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

/// A value on the pickle stack. Dicts and lists are shared (`Rc<RefCell>`) because the memo and the
/// stack refer to the same object, which `SETITEMS`/`APPENDS` then fill.
#[derive(Clone, Debug)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Tuple(Vec<Value>),
    List(Rc<RefCell<Vec<Value>>>),
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    Global(Global),
    Storage(StorageRef),
    Tensor(TensorRef),
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

fn non_negative(v: &Value, what: &str) -> Result<usize, String> {
    match v {
        Value::Int(i) if *i >= 0 => usize::try_from(*i).map_err(|_| format!("data.pkl: {what} {i} is too large")),
        Value::Int(i) => Err(format!("data.pkl: {what} is negative ({i})")),
        other => Err(format!("data.pkl: {what} must be an int, found {}", other.kind())),
    }
}

fn usize_tuple(v: &Value, what: &str) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(items) => items.iter().map(|x| non_negative(x, what)).collect(),
        other => Err(format!("data.pkl: {what} must be a tuple, found {}", other.kind())),
    }
}

/// `persistent_load` of torch's zip format: `('storage', torch.XStorage, key, location, numel)`.
fn persistent_load(pid: Value) -> Result<Value, String> {
    let Value::Tuple(items) = pid else {
        return Err(format!("data.pkl: persistent id must be a tuple, found {}", pid.kind()));
    };
    match items.as_slice() {
        [Value::Str(tag), Value::Global(Global::StorageClass(class)), Value::Str(key), Value::Str(_location), numel]
            if tag == "storage" =>
        {
            Ok(Value::Storage(StorageRef {
                class: class.clone(),
                key: key.clone(),
                numel: non_negative(numel, "storage numel")?,
            }))
        }
        _ => Err(format!(
            "data.pkl: unsupported persistent id (expected ('storage', torch.XStorage, key, location, numel)), got a tuple of {} \
             items: ({})",
            items.len(),
            items.iter().map(Value::kind).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// `REDUCE`: calls one of the allowed globals.
fn reduce(callable: Value, args: Value) -> Result<Value, String> {
    let Value::Tuple(args) = args else {
        return Err(format!("data.pkl: REDUCE arguments must be a tuple, found {}", args.kind()));
    };
    match callable {
        Value::Global(Global::OrderedDict) if args.is_empty() => Ok(Value::Dict(Rc::default())),
        Value::Global(Global::OrderedDict) => Err("data.pkl: OrderedDict called with arguments (unsupported)".into()),
        Value::Global(Global::RebuildTensorV2) => {
            // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
            if !(6..=7).contains(&args.len()) {
                return Err(format!("data.pkl: _rebuild_tensor_v2 takes 6 or 7 arguments, got {}", args.len()));
            }
            let Value::Storage(storage) = &args[0] else {
                return Err(format!("data.pkl: _rebuild_tensor_v2's first argument must be a storage, found {}", args[0].kind()));
            };
            let offset = non_negative(&args[1], "tensor storage_offset")?;
            let shape = usize_tuple(&args[2], "tensor size")?;
            let stride = usize_tuple(&args[3], "tensor stride")?;
            if shape.len() != stride.len() {
                return Err(format!("data.pkl: tensor size {shape:?} and stride {stride:?} differ in rank"));
            }
            Ok(Value::Tensor(TensorRef { storage: storage.clone(), offset, shape, stride }))
        }
        Value::Global(Global::StorageClass(c)) => Err(format!("data.pkl: calling torch.{c} is unsupported")),
        other => Err(format!("data.pkl: REDUCE on a {} (only allowed globals can be called)", other.kind())),
    }
}

/// Runs the pickle `data` and returns the value `STOP` leaves.
pub fn unpickle(data: &[u8]) -> Result<Value, String> {
    let mut r = Reader { data, pos: 0 };
    let mut stack: Vec<Value> = Vec::new();
    let mut marks: Vec<usize> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();

    fn pop(stack: &mut Vec<Value>, marks: &[usize], op: &str, at: usize) -> Result<Value, String> {
        if stack.len() <= marks.last().copied().unwrap_or(0) && !marks.is_empty() {
            return Err(format!("data.pkl: {op} at byte {at} pops across a MARK"));
        }
        stack.pop().ok_or_else(|| format!("data.pkl: {op} at byte {at} on an empty stack"))
    }
    fn pop_mark(stack: &mut Vec<Value>, marks: &mut Vec<usize>, op: &str, at: usize) -> Result<Vec<Value>, String> {
        let m = marks.pop().ok_or_else(|| format!("data.pkl: {op} at byte {at} without a MARK"))?;
        Ok(stack.split_off(m))
    }

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
                let v = pop(&mut stack, &marks, name, at)?;
                if !stack.is_empty() || !marks.is_empty() {
                    return Err(format!(
                        "data.pkl: STOP at byte {at} with {} values and {} marks left on the stack",
                        stack.len(),
                        marks.len()
                    ));
                }
                return Ok(v);
            }
            b'(' => marks.push(stack.len()),
            b'}' => stack.push(Value::Dict(Rc::default())),
            b']' => stack.push(Value::List(Rc::default())),
            b')' => stack.push(Value::Tuple(Vec::new())),
            b't' => {
                let items = pop_mark(&mut stack, &mut marks, name, at)?;
                stack.push(Value::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(pop(&mut stack, &marks, name, at)?);
                }
                items.reverse();
                stack.push(Value::Tuple(items));
            }
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'J' => stack.push(Value::Int(r.u32(name)? as i32 as i64)),
            b'K' => stack.push(Value::Int(r.u8(name)? as i64)),
            b'M' => stack.push(Value::Int(r.u16(name)? as i64)),
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
                stack.push(Value::Int(i64::from_le_bytes(buf)));
            }
            b'G' => {
                let b: [u8; 8] = r.take(8, name)?.try_into().unwrap();
                stack.push(Value::Float(f64::from_be_bytes(b)));
            }
            b'X' => {
                let n = r.u32(name)? as usize;
                stack.push(Value::Str(r.utf8(n, name)?));
            }
            0x8c => {
                let n = r.u8(name)? as usize;
                stack.push(Value::Str(r.utf8(n, name)?));
            }
            b'c' => {
                let module = r.line("GLOBAL module")?;
                let gname = r.line("GLOBAL name")?;
                stack.push(Value::Global(resolve_global(module, gname)?));
            }
            b'q' | b'r' | 0x94 => {
                let idx = match op {
                    b'q' => r.u8(name)? as u32,
                    b'r' => r.u32(name)?,
                    _ => memo.len() as u32,
                };
                let top = stack.last().ok_or_else(|| format!("data.pkl: {name} at byte {at} on an empty stack"))?;
                memo.insert(idx, top.clone());
            }
            b'h' | b'j' => {
                let idx = if op == b'h' { r.u8(name)? as u32 } else { r.u32(name)? };
                let v = memo
                    .get(&idx)
                    .ok_or_else(|| format!("data.pkl: {name} at byte {at} reads memo {idx}, which was never set"))?;
                stack.push(v.clone());
            }
            b'Q' => {
                let pid = pop(&mut stack, &marks, name, at)?;
                stack.push(persistent_load(pid)?);
            }
            b'R' => {
                let args = pop(&mut stack, &marks, name, at)?;
                let callable = pop(&mut stack, &marks, name, at)?;
                stack.push(reduce(callable, args)?);
            }
            b's' | b'u' => {
                let items = if op == b'u' {
                    pop_mark(&mut stack, &mut marks, name, at)?
                } else {
                    let v = pop(&mut stack, &marks, name, at)?;
                    let k = pop(&mut stack, &marks, name, at)?;
                    vec![k, v]
                };
                if items.len() % 2 != 0 {
                    return Err(format!("data.pkl: {name} at byte {at} has an odd number of items ({})", items.len()));
                }
                let Some(Value::Dict(d)) = stack.last() else {
                    let found = stack.last().map_or("nothing", Value::kind);
                    return Err(format!("data.pkl: {name} at byte {at} expects a dict below its items, found {found}"));
                };
                let mut d = d.borrow_mut();
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    // A later SETITEM with an equal string key replaces the earlier value, as in Python.
                    if let Value::Str(ks) = &k
                        && let Some(slot) = d.iter_mut().find(|(ek, _)| matches!(ek, Value::Str(e) if e == ks))
                    {
                        slot.1 = v;
                        continue;
                    }
                    d.push((k, v));
                }
            }
            b'a' | b'e' => {
                let items = if op == b'e' {
                    pop_mark(&mut stack, &mut marks, name, at)?
                } else {
                    vec![pop(&mut stack, &marks, name, at)?]
                };
                let Some(Value::List(l)) = stack.last() else {
                    let found = stack.last().map_or("nothing", Value::kind);
                    return Err(format!("data.pkl: {name} at byte {at} expects a list below its items, found {found}"));
                };
                l.borrow_mut().extend(items);
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

    fn dict_get(v: &Value, key: &str) -> Value {
        let Value::Dict(d) = v else { panic!("not a dict: {}", v.kind()) };
        d.borrow().iter().find(|(k, _)| matches!(k, Value::Str(s) if s == key)).map(|(_, v)| v.clone()).expect(key)
    }

    #[test]
    fn scalars_dicts_lists_and_memo() {
        // {'a': 1, 'b': [None, True, -2, 1.5], 'c': 'x', 'd': (300, 70000), 'e': -129, 'f': <memo 2 = 'x'>}
        let mut p = vec![0x80, 2, b'}', b'q', 0, b'(', b'X', 1, 0, 0, 0, b'a', b'K', 1, b'X', 1, 0, 0, 0, b'b', b']', b'q', 1];
        p.extend([b'(', b'N', 0x88, b'J', 0xfe, 0xff, 0xff, 0xff, b'G']);
        p.extend(1.5f64.to_be_bytes());
        p.extend([b'e', 0x8c, 1, b'c', 0x8c, 1, b'x', b'q', 2, 0x8c, 1, b'd', b'M', 0x2c, 0x01, b'J', 0x70, 0x11, 0x01, 0]);
        p.extend([0x86, 0x8c, 1, b'e', 0x8a, 2, 0x7f, 0xff, b'u', b'X', 1, 0, 0, 0, b'f', b'h', 2, b's', b'.']);
        let v = unpickle(&p).unwrap();
        assert!(matches!(dict_get(&v, "a"), Value::Int(1)));
        let Value::List(l) = dict_get(&v, "b") else { panic!() };
        let l = l.borrow();
        assert!(matches!(l[..], [Value::None, Value::Bool(true), Value::Int(-2), Value::Float(f)] if f == 1.5));
        assert!(matches!(dict_get(&v, "c"), Value::Str(s) if s == "x"));
        assert!(matches!(&dict_get(&v, "d"), Value::Tuple(t) if matches!(t[..], [Value::Int(300), Value::Int(70000)])));
        assert!(matches!(dict_get(&v, "e"), Value::Int(-129)));
        assert!(matches!(dict_get(&v, "f"), Value::Str(s) if s == "x"));

        // The memo refers to the same dict as the stack: (d, d) after d['k'] = 1 holds 'k' twice.
        let v = unpickle(b"\x80\x02(}q\x00X\x01\x00\x00\x00kK\x01sh\x00t.").unwrap();
        let Value::Tuple(t) = v else { panic!() };
        assert_eq!(t.len(), 2);
        assert!(t.iter().all(|d| matches!(dict_get(d, "k"), Value::Int(1))));
    }

    #[test]
    fn rebuild_tensor() {
        let mut p = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\n".to_vec();
        p.extend(b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x06tQK\x01K\x02K\x02\x86K\x01K\x02\x86\x89");
        p.extend(b"ccollections\nOrderedDict\n)RtR.");
        let Value::Tensor(t) = unpickle(&p).unwrap() else { panic!() };
        assert_eq!(t.storage, StorageRef { class: "FloatStorage".into(), key: "0".into(), numel: 6 });
        assert_eq!((t.offset, t.shape, t.stride), (1, vec![2, 2], vec![1, 2]));
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
