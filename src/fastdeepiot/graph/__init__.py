"""Network graphs: layer extraction (`extract`), backend fusion rules (`fusion`), random networks
for fitting the network-level composition (`randomnets`)."""
