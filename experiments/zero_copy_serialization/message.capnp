# The schema of records.py's message for the capnp variant (pycapnp parses it at run time).
@0xb5f1c0d2a3e49786;

struct Record {
  id @0 :Int64;
  score @1 :Float64;
  name @2 :Text;
  email @3 :Text;
  values @4 :List(Int64);
}

struct Message {
  records @0 :List(Record);
}
