//! `enum_with_unknown!`: integer codes as enums that keep the values they do not know.

/// Declares an enum for a C integer code with a catch-all `Unknown(n)` variant.
///
/// Every listed variant maps to its value and C name; any other value becomes
/// `Unknown(value)`, so decoding a code never fails and never loses the value.
/// Only `From<repr>` produces canonical values: `Unknown(v)` with a listed `v`
/// is never built by this crate.
macro_rules! enum_with_unknown {
    (
        $(#[$meta:meta])*
        pub enum $name:ident($repr:ty) {
            $(
                $(#[$vmeta:meta])*
                $variant:ident = $value:literal => $cname:literal,
            )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $(
                $(#[$vmeta])*
                $variant,
            )+
            /// A value this crate has no name for.
            Unknown($repr),
        }

        impl $name {
            /// Every named variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The raw wire value.
            pub const fn to_raw(self) -> $repr {
                match self {
                    $($name::$variant => $value,)+
                    $name::Unknown(value) => value,
                }
            }

            /// The name used by the kernel header, without its prefix, if the value is known.
            pub const fn c_name(self) -> Option<&'static str> {
                match self {
                    $($name::$variant => Some($cname),)+
                    $name::Unknown(_) => None,
                }
            }
        }

        impl From<$repr> for $name {
            fn from(value: $repr) -> Self {
                match value {
                    $($value => $name::$variant,)+
                    other => $name::Unknown(other),
                }
            }
        }

        impl From<$name> for $repr {
            fn from(value: $name) -> $repr {
                value.to_raw()
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match self.c_name() {
                    Some(name) => f.write_str(name),
                    None => write!(f, "UNKNOWN({})", self.to_raw()),
                }
            }
        }

        impl core::str::FromStr for $name {
            type Err = $crate::Error;

            /// Parses the kernel name (`"DEL_VLAN"`, case-insensitive) or a decimal value.
            fn from_str(s: &str) -> core::result::Result<Self, Self::Err> {
                if let Some(found) = Self::ALL
                    .iter()
                    .find(|v| v.c_name().is_some_and(|n| n.eq_ignore_ascii_case(s)))
                {
                    return Ok(*found);
                }
                s.parse::<$repr>()
                    .map(Self::from)
                    .map_err(|_| $crate::Error::UnknownName {
                        kind: stringify!($name),
                        name: s.to_owned(),
                    })
            }
        }
    };
}

/// Declares a bit-flag newtype over an integer; unknown bits are kept as they are.
macro_rules! bit_flags {
    (
        $(#[$meta:meta])*
        pub struct $name:ident($repr:ty) {
            $(
                $(#[$vmeta:meta])*
                const $flag:ident = $value:expr;
            )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub $repr);

        impl $name {
            $(
                $(#[$vmeta])*
                pub const $flag: $name = $name($value);
            )+

            /// Every named flag with its name.
            pub const NAMED: &'static [(&'static str, $name)] = &[$((stringify!($flag), $name::$flag)),+];

            /// No flags.
            pub const fn empty() -> Self {
                $name(0)
            }

            /// The raw bits.
            pub const fn bits(self) -> $repr {
                self.0
            }

            /// Whether every bit of `other` is set in `self`.
            pub const fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }

            /// Whether any bit of `other` is set in `self`.
            pub const fn intersects(self, other: Self) -> bool {
                self.0 & other.0 != 0
            }

            /// The bits set in `self` or `other`.
            pub const fn union(self, other: Self) -> Self {
                $name(self.0 | other.0)
            }

            /// The bits set in both.
            pub const fn intersection(self, other: Self) -> Self {
                $name(self.0 & other.0)
            }

            /// The bits of `self` not set in `other`.
            pub const fn difference(self, other: Self) -> Self {
                $name(self.0 & !other.0)
            }

            /// Names of the named flags that are set, in declaration order.
            pub fn names(self) -> impl Iterator<Item = &'static str> {
                Self::NAMED
                    .iter()
                    .filter(move |(_, f)| f.0 != 0 && self.contains(*f))
                    .map(|(n, _)| *n)
            }

            /// Bits that no named flag covers.
            pub fn unknown_bits(self) -> $repr {
                Self::NAMED.iter().fold(self.0, |rest, (_, f)| rest & !f.0)
            }
        }

        impl core::ops::BitOr for $name {
            type Output = $name;
            fn bitor(self, rhs: $name) -> $name {
                self.union(rhs)
            }
        }

        impl core::ops::BitOrAssign for $name {
            fn bitor_assign(&mut self, rhs: $name) {
                *self = self.union(rhs);
            }
        }

        impl core::ops::BitAnd for $name {
            type Output = $name;
            fn bitand(self, rhs: $name) -> $name {
                self.intersection(rhs)
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                write!(f, "{}(", stringify!($name))?;
                let mut first = true;
                for name in self.names() {
                    if !first {
                        f.write_str(" | ")?;
                    }
                    f.write_str(name)?;
                    first = false;
                }
                let rest = self.unknown_bits();
                if rest != 0 {
                    if !first {
                        f.write_str(" | ")?;
                    }
                    write!(f, "{:#x}", rest)?;
                    first = false;
                }
                if first {
                    f.write_str("empty")?;
                }
                f.write_str(")")
            }
        }
    };
}
