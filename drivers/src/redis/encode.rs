//! Command encoding: RESP arrays of bulk strings, written straight into an
//! output buffer.

/// Something that can be sent as one command argument.
///
/// Byte-like values are sent verbatim (binary-safe); numbers are sent as
/// their decimal text, formatted on the stack.
pub trait ToArg {
    /// Appends this argument to `out` as one RESP bulk string.
    fn write_arg(&self, out: &mut Vec<u8>);
}

impl<T: ToArg + ?Sized> ToArg for &T {
    fn write_arg(&self, out: &mut Vec<u8>) {
        (**self).write_arg(out)
    }
}

impl ToArg for [u8] {
    fn write_arg(&self, out: &mut Vec<u8>) {
        write_bulk(out, self)
    }
}

impl<const N: usize> ToArg for [u8; N] {
    fn write_arg(&self, out: &mut Vec<u8>) {
        write_bulk(out, self)
    }
}

impl ToArg for Vec<u8> {
    fn write_arg(&self, out: &mut Vec<u8>) {
        write_bulk(out, self)
    }
}

impl ToArg for str {
    fn write_arg(&self, out: &mut Vec<u8>) {
        write_bulk(out, self.as_bytes())
    }
}

impl ToArg for String {
    fn write_arg(&self, out: &mut Vec<u8>) {
        write_bulk(out, self.as_bytes())
    }
}

impl ToArg for bytes::Bytes {
    fn write_arg(&self, out: &mut Vec<u8>) {
        write_bulk(out, self)
    }
}

macro_rules! int_arg {
    ($($t:ty),*) => {$(
        impl ToArg for $t {
            fn write_arg(&self, out: &mut Vec<u8>) {
                let mut buf = [0u8; 40];
                let s = fmt_i128(*self as i128, &mut buf);
                write_bulk(out, s)
            }
        }
    )*};
}
int_arg!(i8, i16, i32, i64, isize, u8, u16, u32, u64, usize);

impl ToArg for f64 {
    fn write_arg(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        // `{:?}` switches to exponent notation for very large or small
        // values, which Redis accepts, so the text always fits; `{}` would
        // print 300 digits for 1e300.
        let mut buf = [0u8; 40];
        let mut cur = std::io::Cursor::new(&mut buf[..]);
        if self.is_infinite() {
            let _ = cur.write_all(if *self > 0.0 { b"+inf" } else { b"-inf" });
        } else {
            let _ = write!(cur, "{self:?}");
        }
        let n = cur.position() as usize;
        write_bulk(out, &buf[..n])
    }
}

impl ToArg for f32 {
    fn write_arg(&self, out: &mut Vec<u8>) {
        f64::from(*self).write_arg(out)
    }
}

/// Formats an integer into `buf` without allocating.
pub(crate) fn fmt_i128(v: i128, buf: &mut [u8; 40]) -> &[u8] {
    let neg = v < 0;
    let mut n = v.unsigned_abs();
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if neg {
        i -= 1;
        buf[i] = b'-';
    }
    &buf[i..]
}

fn fmt_usize(v: usize, buf: &mut [u8; 40]) -> &[u8] {
    fmt_i128(v as i128, buf)
}

/// Appends `$<len>\r\n<bytes>\r\n`.
#[inline]
pub fn write_bulk(out: &mut Vec<u8>, b: &[u8]) {
    let mut buf = [0u8; 40];
    let len = fmt_usize(b.len(), &mut buf);
    out.reserve(len.len() + b.len() + 5);
    out.push(b'$');
    out.extend_from_slice(len);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

/// Appends `*<n>\r\n`, the header of a command of `n` arguments.
#[inline]
pub fn write_array_header(out: &mut Vec<u8>, n: usize) {
    let mut buf = [0u8; 40];
    out.push(b'*');
    out.extend_from_slice(fmt_usize(n, &mut buf));
    out.extend_from_slice(b"\r\n");
}

/// A command built at run time, for commands without a typed method.
///
/// Arguments are encoded as they are added into one buffer, so building a
/// command costs one allocation whatever its number of arguments.
///
/// ```
/// use tidepool_drivers::redis::cmd;
/// let c = cmd("SET").arg("key").arg(b"\x00binary\r\n").arg("EX").arg(60);
/// assert_eq!(c.argc(), 5);
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Cmd {
    argc: usize,
    body: Vec<u8>,
}

/// Starts a [`Cmd`] with its name.
pub fn cmd(name: impl ToArg) -> Cmd {
    Cmd::new(name)
}

impl Cmd {
    /// A command with its name as first argument.
    pub fn new(name: impl ToArg) -> Cmd {
        let mut c = Cmd {
            argc: 0,
            body: Vec::with_capacity(64),
        };
        c.push_arg(name);
        c
    }

    /// Adds one argument (builder style).
    pub fn arg(mut self, a: impl ToArg) -> Cmd {
        self.push_arg(a);
        self
    }

    /// Adds every argument of an iterator (builder style).
    pub fn args<A: ToArg>(mut self, it: impl IntoIterator<Item = A>) -> Cmd {
        for a in it {
            self.push_arg(a);
        }
        self
    }

    /// Adds one argument in place.
    pub fn push_arg(&mut self, a: impl ToArg) -> &mut Cmd {
        a.write_arg(&mut self.body);
        self.argc += 1;
        self
    }

    /// Number of arguments, name included.
    pub fn argc(&self) -> usize {
        self.argc
    }

    /// The name and arguments, decoded back from the wire form.
    pub fn args_iter(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = &self.body[..];
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let nl = rest.iter().position(|&b| b == b'\n')?;
            let len: usize = std::str::from_utf8(&rest[1..nl - 1]).ok()?.parse().ok()?;
            let arg = &rest[nl + 1..nl + 1 + len];
            rest = &rest[nl + 3 + len..];
            Some(arg)
        })
    }
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut l = f.debug_list();
        for a in self.args_iter() {
            l.entry(&String::from_utf8_lossy(a));
        }
        l.finish()
    }
}

/// Something that encodes as exactly one command: a [`Cmd`], or an array,
/// slice or `Vec` of arguments (`["SET", "k", "v"]`).
pub trait IntoCommand {
    /// Appends the RESP encoding of the command to `out`.
    fn encode_into(&self, out: &mut Vec<u8>);

    /// Appends the first argument (the command name) as a bulk string;
    /// lets the connection refuse commands it cannot multiplex without
    /// encoding the whole command twice.
    #[doc(hidden)]
    fn write_name(&self, out: &mut Vec<u8>);
}

impl IntoCommand for Cmd {
    fn encode_into(&self, out: &mut Vec<u8>) {
        write_array_header(out, self.argc);
        out.extend_from_slice(&self.body);
    }

    fn write_name(&self, out: &mut Vec<u8>) {
        if let Some(name) = self.args_iter().next() {
            write_bulk(out, name);
        }
    }
}

impl<T: IntoCommand + ?Sized> IntoCommand for &T {
    fn encode_into(&self, out: &mut Vec<u8>) {
        (**self).encode_into(out)
    }

    fn write_name(&self, out: &mut Vec<u8>) {
        (**self).write_name(out)
    }
}

impl<A: ToArg> IntoCommand for [A] {
    fn encode_into(&self, out: &mut Vec<u8>) {
        write_array_header(out, self.len());
        for a in self {
            a.write_arg(out);
        }
    }

    fn write_name(&self, out: &mut Vec<u8>) {
        if let Some(a) = self.first() {
            a.write_arg(out);
        }
    }
}

impl<A: ToArg, const N: usize> IntoCommand for [A; N] {
    fn encode_into(&self, out: &mut Vec<u8>) {
        self[..].encode_into(out)
    }

    fn write_name(&self, out: &mut Vec<u8>) {
        self[..].write_name(out)
    }
}

impl<A: ToArg> IntoCommand for Vec<A> {
    fn encode_into(&self, out: &mut Vec<u8>) {
        self[..].encode_into(out)
    }

    fn write_name(&self, out: &mut Vec<u8>) {
        self[..].write_name(out)
    }
}

/// Encodes a command whose argument count is known up front straight into
/// the output buffer; typed commands use it so they never build a [`Cmd`].
pub(crate) struct Enc<'a> {
    out: &'a mut Vec<u8>,
    #[cfg(debug_assertions)]
    left: usize,
}

impl<'a> Enc<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>, argc: usize) -> Enc<'a> {
        write_array_header(out, argc);
        Enc {
            out,
            #[cfg(debug_assertions)]
            left: argc,
        }
    }

    #[inline]
    pub(crate) fn arg(&mut self, a: impl ToArg) -> &mut Self {
        #[cfg(debug_assertions)]
        {
            // A miscounted header would desynchronise every later reply.
            assert!(self.left > 0, "more arguments than announced");
            self.left -= 1;
        }
        a.write_arg(self.out);
        self
    }
}

#[cfg(debug_assertions)]
impl Drop for Enc<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert_eq!(self.left, 0, "fewer arguments than announced");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(c: impl IntoCommand) -> Vec<u8> {
        let mut out = Vec::new();
        c.encode_into(&mut out);
        out
    }

    #[test]
    fn encodes_commands() {
        assert_eq!(enc(["GET", "k"]), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        assert_eq!(
            enc(cmd("SET").arg(b"a\r\n\0b".as_slice()).arg(-12i64)),
            b"*3\r\n$3\r\nSET\r\n$5\r\na\r\n\0b\r\n$3\r\n-12\r\n"
        );
        assert_eq!(enc(Vec::<&str>::new()), b"*0\r\n");
        assert_eq!(
            enc(cmd("X").arg(String::new())),
            b"*2\r\n$1\r\nX\r\n$0\r\n\r\n"
        );
        let mut out = Vec::new();
        Enc::new(&mut out, 2).arg("INCRBY").arg(u64::MAX);
        assert_eq!(
            out,
            b"*2\r\n$6\r\nINCRBY\r\n$20\r\n18446744073709551615\r\n"
        );
    }

    #[test]
    fn numbers() {
        let mut b = [0u8; 40];
        assert_eq!(fmt_i128(0, &mut b), b"0");
        assert_eq!(fmt_i128(i64::MIN as i128, &mut b), b"-9223372036854775808");
        let f = |x: f64| {
            let mut o = Vec::new();
            x.write_arg(&mut o);
            String::from_utf8(o).unwrap()
        };
        assert_eq!(f(1.5), "$3\r\n1.5\r\n");
        assert_eq!(f(1e300), "$5\r\n1e300\r\n");
        assert_eq!(f(f64::INFINITY), "$4\r\n+inf\r\n");
        assert_eq!(f(f64::NEG_INFINITY), "$4\r\n-inf\r\n");
        assert_eq!(
            f(-2.2250738585072014e-308),
            "$24\r\n-2.2250738585072014e-308\r\n"
        );
    }

    #[test]
    fn debug_and_args() {
        let c = cmd("SET").arg("k").arg(b"\r\n".as_slice());
        let args: Vec<&[u8]> = c.args_iter().collect();
        assert_eq!(args, vec![b"SET".as_slice(), b"k", b"\r\n"]);
        assert_eq!(format!("{c:?}"), r#"["SET", "k", "\r\n"]"#);
    }

    #[test]
    #[should_panic(expected = "more arguments")]
    #[cfg(debug_assertions)]
    fn enc_checks_count() {
        let mut out = Vec::new();
        Enc::new(&mut out, 1).arg("a").arg("b");
    }
}
