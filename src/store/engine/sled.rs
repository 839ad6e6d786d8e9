//! Placeholder so that the etcd-engine branch builds before the sled engine
//! (part S of issue 14) lands: at merge, part S's file replaces this one.
