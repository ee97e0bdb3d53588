"""Labs on network namespaces: hosts joined by veth pairs to an underlay bridge that lives in a
namespace of its own.  Used by ``vxtun-lab`` (the README's main job), the tests and the benchmarks.
Nothing here touches the root namespace's interfaces."""
