{
  "targets": [
    {
      "target_name": "original_dst",
      "sources": ["native/original_dst.c"],
      "cflags": ["-O2", "-Wall"]
    }
  ]
}
