"""What the product does, shared by REST, GraphQL and /ws. No sockets, no drivers."""
