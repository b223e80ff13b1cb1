"""The ``ans`` command: the one place that knows every role, importing each lazily per subcommand
(so ``ans device`` never imports TensorFlow), and the operations around them (service install,
monitor)."""
