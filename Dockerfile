FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY llmpulse ./llmpulse
RUN pip install --no-cache-dir .
EXPOSE 6066
CMD ["llmpulse", "worker"]
