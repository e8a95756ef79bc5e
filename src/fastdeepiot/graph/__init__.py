"""Network graphs: the torch.fx front end (`trace`), the op vocabulary every consumer reads (`ops`), layer
extraction (`extract`, data classes in `calls`), backend fusion rules (`fusion`), channel dependency
tracing for compression (`channels`), random networks for fitting the network-level composition
(`randomnets`)."""
